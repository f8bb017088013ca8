package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/alertd/alertd/internal/outbox"
)

// In cluster mode each owned partition has an outbox of its own, whose
// entries are numbered by the partition's sequence. The instance's HTTP
// API (and so `alertd outbox` with its file) shows the outboxes of the
// partitions it owns as one, each entry's ID made unique across them:
// partition × queueIDSpan + the partition's ID. Partition 0's IDs are
// unchanged; an entry of partition 3 numbered 5 is 3000000000005.
const queueIDSpan = 1_000_000_000_000

// partitionQueue is the owned partitions' outboxes as one httpapi.Queue.
type partitionQueue struct{ a *App }

func (q partitionQueue) pipelines() []*partitionPipeline {
	if cn := q.a.cluster.Load(); cn != nil {
		return cn.pipelines()
	}
	return nil
}

func queueID(partition int, id uint64) uint64 { return uint64(partition)*queueIDSpan + id }

// owner is the open pipeline of the partition an ID names, and the ID
// within it.
func (q partitionQueue) owner(id uint64) (*partitionPipeline, uint64, error) {
	p, local := int(id/queueIDSpan), id%queueIDSpan
	for _, pp := range q.pipelines() {
		if pp.partition == p {
			return pp, local, nil
		}
	}
	return nil, 0, fmt.Errorf("entry %d is in partition %d, which this instance does not own now (alertd cluster status shows its owner): %w", id, p, outbox.ErrNotFound)
}

func (q partitionQueue) List() (pending, dead []*outbox.Entry, err error) {
	pending, dead = []*outbox.Entry{}, []*outbox.Entry{}
	renumber := func(p int, es []*outbox.Entry) []*outbox.Entry {
		out := make([]*outbox.Entry, len(es))
		for i, e := range es {
			c := *e
			c.ID = queueID(p, e.ID)
			out[i] = &c
		}
		return out
	}
	for _, pp := range q.pipelines() {
		p, d, err := pp.outbox.List()
		if err != nil {
			return nil, nil, fmt.Errorf("partition %d: %w", pp.partition, err)
		}
		pending = append(pending, renumber(pp.partition, p)...)
		dead = append(dead, renumber(pp.partition, d)...)
	}
	return pending, dead, nil
}

func (q partitionQueue) Unreadable() ([]outbox.Unreadable, error) {
	out := []outbox.Unreadable{}
	for _, pp := range q.pipelines() {
		us, err := pp.outbox.Unreadable()
		if err != nil {
			return nil, fmt.Errorf("partition %d: %w", pp.partition, err)
		}
		for _, u := range us {
			u.ID = queueID(pp.partition, u.ID)
			out = append(out, u)
		}
	}
	return out, nil
}

func (q partitionQueue) Retry(id uint64, now time.Time) error {
	pp, local, err := q.owner(id)
	if err != nil {
		return err
	}
	return pp.outbox.Retry(local, now)
}

// RetryAllDead retries each partition's dead letters one commit each: a
// partition's commit carries a bounded number of writes.
func (q partitionQueue) RetryAllDead(now time.Time) (int, error) {
	n := 0
	var errs []error
	for _, pp := range q.pipelines() {
		_, dead, err := pp.outbox.List()
		if err != nil {
			errs = append(errs, fmt.Errorf("partition %d: %w", pp.partition, err))
			continue
		}
		for _, e := range dead {
			if err := pp.outbox.Retry(e.ID, now); err != nil {
				errs = append(errs, fmt.Errorf("partition %d entry %d: %w", pp.partition, e.ID, err))
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}

func (q partitionQueue) Drop(id uint64) error {
	pp, local, err := q.owner(id)
	if err != nil {
		return err
	}
	return pp.outbox.Drop(local)
}
