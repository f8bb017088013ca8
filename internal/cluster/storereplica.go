package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/alertd/alertd/internal/store"
)

// A partition's pipeline runs alertd's single-node code over a local
// store (store.OpenReplicated) whose replica is the partition's state:
// LoadInto fills the file from the PartitionState, and NewStoreReplica
// commits every write transaction of the file to it first. The store's
// buckets and keys are the state's buckets and keys; bucket sequences
// travel as the store replicates them (bucket "\x00seq").

// NewStoreReplica is ps as a store's replica: each transaction's write set
// is one Commit of ps, within timeout (from when the transaction commits;
// DefaultStateTimeout when 0). It must be ps's only committer, and the
// store it serves ps's only user: it reasons about ps's state from its own
// commits.
//
// ps's errors come back as they are (errors.Is sees ErrFenced, ErrBusy
// after a few quick retries, ErrBatchTooLarge, ErrKeyTooLong), and the
// store's transaction rolls back. A commit whose outcome is unknown is
// settled at once by ps.Resync: if the batch landed, the commit succeeds
// (the file then commits it too); if it did not, the error wraps
// ErrUnknownOutcome and nothing changed on either side. If the Resync
// fails other than fenced, nobody knows whether the state is ahead of the
// file: the error wraps store.ErrReopen, and so does every later commit
// (the store refuses writes from then on). The caller closes the store,
// calls ps.Resync until it succeeds, and opens the store again with
// store.OpenReplicated(path, NewStoreReplica(ps, timeout), LoadInto(ps)).
func NewStoreReplica(ps *PartitionState, timeout time.Duration) store.Replica {
	if timeout <= 0 {
		timeout = DefaultStateTimeout
	}
	return &storeReplica{ps: ps, timeout: timeout}
}

var _ store.Replica = (*storeReplica)(nil)

type storeReplica struct {
	ps      *PartitionState
	timeout time.Duration
	commit  func(context.Context, []Write) error // ps.Commit when nil (tests lose replies)

	mu     sync.Mutex // one commit at a time (the store's writer is one anyway)
	reopen error      // wraps store.ErrReopen once set
}

// busyRetries bounds the quick retries of a commit refused with ErrBusy
// (too many batches in flight on the stream: other partitions' commits,
// which clear within milliseconds).
const busyRetries = 3

func (r *storeReplica) Commit(writes []store.Write) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reopen != nil {
		return r.reopen
	}
	ws := make([]Write, len(writes))
	for i, w := range writes {
		ws[i] = Write{Bucket: w.Bucket, Key: w.Key, Value: w.Value, Delete: w.Delete}
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	commit := r.commit
	if commit == nil {
		commit = r.ps.Commit
	}
	err := commit(ctx, ws)
	for attempt := 1; errors.Is(err, ErrBusy) && attempt <= busyRetries; attempt++ {
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * 5 * time.Millisecond):
		}
		err = commit(ctx, ws)
	}
	if !errors.Is(err, ErrUnknownOutcome) {
		return err
	}
	return r.settle(ws, err)
}

// settle finds out, after a commit of ws whose outcome is unknown, whether
// it landed. Once Resync succeeded no batch sent before it can land any
// more, and memory is the stream; the batch was atomic, so it landed iff
// memory shows every one of its writes (if they changed nothing, landed
// or not is the same).
func (r *storeReplica) settle(ws []Write, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	if err := r.ps.Resync(ctx); err != nil {
		if errors.Is(err, ErrFenced) {
			return err
		}
		r.reopen = fmt.Errorf("partition %d: %w: %w; resync: %v", r.ps.Partition(), store.ErrReopen, cause, err)
		return r.reopen
	}
	if r.shows(ws) {
		return nil
	}
	return cause
}

// shows reports whether the state holds every write of ws.
func (r *storeReplica) shows(ws []Write) bool {
	for _, w := range ws {
		v, ok := r.ps.Get(w.Bucket, w.Key)
		if w.Delete == ok || !w.Delete && !bytes.Equal(v, w.Value) {
			return false
		}
	}
	return true
}

// LoadInto is the load of store.OpenReplicated from ps: every key of
// every bucket of ps's state, sequences included.
func LoadInto(ps *PartitionState) func(put func(bucket, key, value []byte) error) error {
	return func(put func(bucket, key, value []byte) error) error {
		for _, b := range ps.buckets() {
			if err := ps.ForEach([]byte(b), func(k, v []byte) error { return put([]byte(b), k, v) }); err != nil {
				return fmt.Errorf("partition %d: %w", ps.Partition(), err)
			}
		}
		return nil
	}
}

// buckets lists the buckets that hold keys, in byte order.
func (s *PartitionState) buckets() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.data))
	for b := range s.data {
		out = append(out, b)
	}
	slices.Sort(out)
	return out
}
