package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Status is a snapshot for `alertd cluster status`: who is alive, who owns
// which partition, and how far behind each partition is.
type Status struct {
	// Instance is who took the snapshot; empty when ReadStatus did, from
	// outside the cluster.
	Instance   string            `json:"instance,omitempty"`
	Partitions []PartitionStatus `json:"partitions"`
	Members    []string          `json:"members"`
	// Started is when each member began, as it wrote in its heartbeat
	// (ReadStatus only).
	Started map[string]time.Time `json:"started,omitempty"`
	// Stream is the ingest stream; Messages the readings it holds, which
	// under work-queue retention are the ones not yet acknowledged.
	Stream   string `json:"stream"`
	Messages uint64 `json:"messages"`
}

// ErrNoStream means the ingest stream does not exist: no alertd has
// started on this NATS cluster with this prefix.
var ErrNoStream = errors.New("no alertd has run on this cluster yet")

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
		Stream:   i.names.stream,
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
	s, err := i.cfg.JS.Stream(ctx, i.names.stream)
	if err != nil {
		return st, fmt.Errorf("look up stream %s: %w", i.names.stream, err)
	}
	st.Messages = s.CachedInfo().State.Msgs
	return st, readLag(ctx, i.cfg.JS, i.names, st.Partitions)
}

// readLag fills each partition's backlog from its durable consumer.
func readLag(ctx context.Context, js jetstream.JetStream, n names, parts []PartitionStatus) error {
	for k := range parts {
		ps := &parts[k]
		c, err := js.Consumer(ctx, n.stream, n.consumer(ps.Partition))
		if err != nil {
			return fmt.Errorf("partition %d consumer %s: %w", ps.Partition, n.consumer(ps.Partition), err)
		}
		info := c.CachedInfo()
		ps.Pending, ps.AckPending = info.NumPending, info.NumAckPending
	}
	return nil
}

// ReadStatus is Status seen from outside the cluster, by a process that
// runs no Ingest (`alertd cluster status`): the members and owners as the
// lease bucket holds them now, the partition count as the ingest stream
// was created with, each partition's lag, and the stream's message count.
// It fails with ErrNoStream when no instance has created the stream yet.
func ReadStatus(ctx context.Context, js jetstream.JetStream, prefix string) (Status, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	n := newNames(prefix)
	st := Status{Stream: n.stream, Members: []string{}, Started: map[string]time.Time{}}
	s, err := js.Stream(ctx, n.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return st, fmt.Errorf("%w: no stream %s", ErrNoStream, n.stream)
	}
	if err != nil {
		return st, fmt.Errorf("look up stream %s: %w", n.stream, err)
	}
	info := s.CachedInfo()
	st.Messages = info.State.Msgs
	parts, err := streamPartitions(info.Config)
	if err != nil {
		return st, fmt.Errorf("stream %s: %w", n.stream, err)
	}
	v, err := readBucket(ctx, js, n, st.Started)
	if err != nil {
		return st, err
	}
	for id := range v.members {
		st.Members = append(st.Members, id)
	}
	slices.Sort(st.Members)
	for p := range parts {
		e := v.leases[p]
		st.Partitions = append(st.Partitions, PartitionStatus{Partition: p, Owner: e.owner, Term: e.term})
	}
	return st, readLag(ctx, js, n, st.Partitions)
}

var partitionFunc = regexp.MustCompile(`\{\{\s*partition\((\d+)\)\s*\}\}`)

// streamPartitions reads the partition count from the stream's subject
// transform, which is what the running instances use, whatever a
// configuration file says.
func streamPartitions(c jetstream.StreamConfig) (int, error) {
	if c.SubjectTransform == nil {
		return 0, errors.New("no subject transform: not an alertd ingest stream")
	}
	m := partitionFunc.FindStringSubmatch(c.SubjectTransform.Destination)
	if m == nil {
		return 0, fmt.Errorf("subject transform %q has no partition(N)", c.SubjectTransform.Destination)
	}
	return strconv.Atoi(m[1])
}

// readBucket reads every live key of the lease bucket once, into a view;
// started receives each member's start time. A missing bucket is an empty
// view: the stream is created first, so an instance may be starting.
func readBucket(ctx context.Context, js jetstream.JetStream, n names, started map[string]time.Time) (view, error) {
	v := newView()
	kv, err := js.KeyValue(ctx, n.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return v, nil
	}
	if err != nil {
		return v, fmt.Errorf("open lease bucket %s: %w", n.bucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return v, fmt.Errorf("read lease bucket %s: %w", n.bucket, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("read lease bucket %s: %w", n.bucket, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok || e == nil { // nil: every current value has been delivered
				return v, nil
			}
			v.apply(e)
			if id, ok := strings.CutPrefix(e.Key(), memberKeyPrefix); ok {
				var m memberValue
				if json.Unmarshal(e.Value(), &m) == nil {
					started[id] = m.Started
				}
			}
		}
	}
}

func jsonValue(v any) ([]byte, error) { return json.Marshal(v) }
