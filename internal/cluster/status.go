package cluster

import (
	"context"
	"encoding/json"
	"fmt"
)

// Status is a snapshot for `alertd cluster status`: who is alive, who owns
// which partition, and how far behind each partition is.
type Status struct {
	Instance   string            `json:"instance"`
	Partitions []PartitionStatus `json:"partitions"`
	Members    []string          `json:"members"`
}

// PartitionStatus is one partition's owner and backlog.
type PartitionStatus struct {
	Partition int    `json:"partition"`
	Owner     string `json:"owner,omitempty"` // empty while no instance holds it
	Term      uint64 `json:"term,omitempty"`
	// Pending readings are stored and not yet delivered; AckPending are
	// delivered and not yet acknowledged. Their sum is the lag.
	Pending    uint64 `json:"pending"`
	AckPending int    `json:"ack_pending"`
}

// Status reads the owners from this instance's view of the lease bucket
// (its own leases from itself) and each partition's lag from its consumer.
func (i *Ingest) Status(ctx context.Context) (Status, error) {
	i.mu.Lock()
	st := Status{
		Instance: i.cfg.Instance,
		Members:  i.view.liveMembers(i.cfg.Instance),
	}
	now := i.cfg.now()
	for p := range i.cfg.Partitions {
		e := i.view.leases[p]
		// Our own leases we know first hand; the view learns of them
		// through the watch, a moment later.
		if l := i.held[p]; l != nil && l.valid(now) {
			e = leaseEntry{owner: i.cfg.Instance, term: l.term}
		}
		st.Partitions = append(st.Partitions, PartitionStatus{Partition: p, Owner: e.owner, Term: e.term})
	}
	i.mu.Unlock()
	for k := range st.Partitions {
		ps := &st.Partitions[k]
		c, err := i.cfg.JS.Consumer(ctx, i.names.stream, i.names.consumer(ps.Partition))
		if err != nil {
			return st, fmt.Errorf("partition %d consumer: %w", ps.Partition, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return st, fmt.Errorf("partition %d consumer info: %w", ps.Partition, err)
		}
		ps.Pending, ps.AckPending = info.NumPending, info.NumAckPending
	}
	return st, nil
}

func jsonValue(v any) ([]byte, error) { return json.Marshal(v) }
