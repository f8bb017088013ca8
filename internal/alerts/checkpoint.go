package alerts

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/alertd/alertd/internal/store"
)

// Silence rules' last-seen times are not written per reading: a crash
// forgets at most one checkpoint interval of them, which only costs the
// silence alert of a device that reported for the first time in that
// interval and then went quiet (after a restart, silence is counted from
// the reconnection anyway).
//
// A checkpoint writes only what changed since the last one: the series on
// the dirty list (appended to when a series first changes, so taking it
// is no scan of the table) and the deletions of evicted series. It writes
// them in key order, CheckpointBatch keys per transaction, each value 8
// bytes of last-seen time and 1 of readings counted up to 2 (rule\x00topic
// in the last_seen bucket), so it never decodes or re-encodes a record and
// never overwrites a transition. Between its small commits, paced to leave
// the store's single writer free at least half the time, the transactions
// that record alerts, queue their mail and remove delivered mail get it:
// alert latency does not grow with the number of series.

// CheckpointBatch bounds the keys one checkpoint transaction writes: one
// such commit takes a few milliseconds, so an alert waiting for the writer
// waits no longer than that.
const CheckpointBatch = 1000

// takeChunk bounds the dirty series taken per hold of the tracker's lock,
// so taking 100,000 of them never holds up readings for long.
const takeChunk = 4096

// Writer is the part of *store.DB a checkpoint uses.
type Writer interface {
	Update(func(*store.Tx) error) error
}

// seenOp is one key a checkpoint writes: a last-seen time, or (s nil) the
// deletion of an evicted series.
type seenOp struct {
	k    key
	raw  []byte
	s    *Series
	last time.Time
	seen uint8
}

// Checkpoint writes the last-seen times that changed and deletes evicted
// series from the store, paced: after each transaction it waits as long
// as that transaction took, so it holds the store's single writer at
// most half the time, whatever the disk's speed. The mailer removes each
// delivered mail in a transaction of its own: back-to-back checkpoint
// commits on a slow disk would let it send one mail per two commits, and
// alerts would queue for as long as the checkpoint lasts. It stops early
// when ctx ends, leaving the rest for the next checkpoint, and returns
// how many series it left unwritten.
func (t *Tracker) Checkpoint(ctx context.Context, db Writer) (left int, err error) {
	return t.checkpoint(ctx, db, time.Time{}, true)
}

// Flush is Checkpoint at shutdown, when nothing else writes: unpaced,
// and stopping once the tracker's clock passes until (zero: never).
func (t *Tracker) Flush(db Writer, until time.Time) (left int, err error) {
	return t.checkpoint(context.Background(), db, until, false)
}

func (t *Tracker) checkpoint(ctx context.Context, db Writer, until time.Time, pace bool) (left int, err error) {
	var took time.Duration // the last transaction
	t.ckMu.Lock()
	defer t.ckMu.Unlock()
	ops := t.takeDirty()
	for i := range ops {
		ops[i].raw = seriesKey(ops[i].k.rule, ops[i].k.topic)
	}
	// In key order, each commit touches a few neighbouring pages instead
	// of one page per key.
	slices.SortFunc(ops, func(a, b seenOp) int { return bytes.Compare(a.raw, b.raw) })
	for i := 0; i < len(ops); i += t.batch {
		if ctx.Err() != nil || (!until.IsZero() && !t.now().Before(until)) {
			t.putBack(ops[i:])
			return len(ops) - i, nil
		}
		if pace && i > 0 {
			wait(ctx, took)
		}
		batch := ops[i:min(i+t.batch, len(ops))]
		start := time.Now()
		if err := db.Update(func(tx *store.Tx) error { return t.write(tx, batch) }); err != nil {
			t.putBack(ops[i:])
			return len(ops) - i, fmt.Errorf("save last-seen times: %w", err)
		}
		took = time.Since(start)
	}
	return 0, nil
}

// wait sleeps for d or until ctx ends.
func wait(ctx context.Context, d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
	case <-tm.C:
	}
}

// takeDirty empties the deletions and the dirty list as it was when
// called (series that change meanwhile wait for the next checkpoint).
func (t *Tracker) takeDirty() []seenOp {
	t.mu.Lock()
	n := t.ndirty
	ops := make([]seenOp, 0, n+len(t.deletes))
	for _, k := range t.deletes {
		ops = append(ops, seenOp{k: k})
	}
	t.deletes = nil
	t.mu.Unlock()
	for taken := 0; taken < n; {
		t.mu.Lock()
		for end := min(taken+takeChunk, n); taken < end; taken++ {
			s := t.dirty.head
			if s == nil {
				n = taken // evicted meanwhile
				break
			}
			t.clean(s)
			ops = append(ops, seenOp{k: key{s.Rule.Name, s.Topic}, s: s, last: s.LastSeen, seen: s.b.seen})
		}
		t.mu.Unlock()
	}
	return ops
}

// write stores ops in tx. Which ops still apply is decided here, under the
// tracker's lock and inside the write transaction: a series evicted since
// it was taken is not written back, and an evicted key tracked again is
// not deleted. Whatever changes after this decision is written by a later
// transaction, which bbolt orders after this one.
func (t *Tracker) write(tx *store.Tx, ops []seenOp) error {
	live := make([]bool, len(ops))
	t.mu.Lock()
	for i := range ops {
		cur := t.series[ops[i].k]
		if ops[i].s == nil {
			live[i] = cur == nil
		} else if cur == ops[i].s {
			live[i] = true
			cur.b.stored = true
		}
	}
	t.mu.Unlock()
	seen, recs := tx.Bucket(store.BucketLastSeen), tx.Bucket(store.BucketAlerts)
	vals := make([]byte, lastSeenLen*len(ops)) // bbolt keeps values until the commit
	for i, o := range ops {
		if !live[i] {
			continue
		}
		if o.s == nil {
			if err := seen.Delete(o.raw); err != nil {
				return err
			}
			if err := recs.Delete(o.raw); err != nil {
				return err
			}
			continue
		}
		v := vals[i*lastSeenLen : (i+1)*lastSeenLen]
		encodeLastSeen(v, o.last, o.seen)
		if err := seen.Put(o.raw, v); err != nil {
			return err
		}
	}
	return nil
}

// putBack returns ops a checkpoint did not write to the next one.
func (t *Tracker) putBack(ops []seenOp) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range ops {
		cur := t.series[o.k]
		switch {
		case o.s == nil && cur == nil:
			t.deletes = append(t.deletes, o.k)
		case o.s != nil && cur == o.s:
			t.markDirty(cur)
		}
	}
}

// markDirty puts s on the dirty list, once.
func (t *Tracker) markDirty(s *Series) {
	if !s.b.dirty {
		s.b.dirty = true
		t.dirty.push(s)
		t.ndirty++
	}
}

// clean takes s off the dirty list.
func (t *Tracker) clean(s *Series) {
	if s.b.dirty {
		s.b.dirty = false
		t.dirty.remove(s)
		t.ndirty--
	}
}

// Dirty is how many series have a last-seen time the store does not have.
func (t *Tracker) Dirty() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ndirty
}

// lastSeenLen is a last_seen value: unix nanoseconds, big-endian, then
// the readings seen, counted up to 2.
const lastSeenLen = 9

func encodeLastSeen(v []byte, last time.Time, seen uint8) {
	binary.BigEndian.PutUint64(v, uint64(last.UnixNano()))
	v[8] = seen
}

// decodeLastSeen reads a last_seen value; seen is 0 when not recorded.
func decodeLastSeen(v []byte) (last time.Time, seen uint8, ok bool) {
	if len(v) < 8 {
		return time.Time{}, 0, false
	}
	last = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	if len(v) > 8 {
		seen = min(v[8], 2)
	}
	return last, seen, true
}
