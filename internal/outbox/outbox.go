// Package outbox is alertd's durable mail queue in bbolt. A mail enters it
// (fully rendered, with its Message-ID and Date fixed) in the same
// transaction that admitted its notification, before the MQTT message that
// caused it is acknowledged. It leaves when the server accepted it for every
// recipient, or moves to the dead bucket with the reason when it never will
// be. Entries are keyed by a bbolt sequence, so a cursor walks them in the
// order they were queued.
package outbox

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/alertd/alertd/internal/store"
)

// Entry is one queued mail.
type Entry struct {
	ID        uint64    `json:"id"`
	Rule      string    `json:"rule"`
	Series    string    `json:"series"`
	From      string    `json:"from"`
	To        []string  `json:"to"`                  // recipients still to deliver to
	Delivered []string  `json:"delivered,omitempty"` // recipients that accepted it
	Subject   string    `json:"subject"`
	MessageID string    `json:"message_id"`
	Message   []byte    `json:"message"` // RFC 5322 bytes, CRLF line endings
	Created   time.Time `json:"created"`
	Attempts  int       `json:"attempts"`
	Next      time.Time `json:"next_attempt"`
	LastError string    `json:"last_error,omitempty"`
	DeadAt    time.Time `json:"dead_at,omitzero"`
}

// ErrNotFound means no entry has the given id.
var ErrNotFound = errors.New("no such outbox entry")

// Outbox is the queue. Safe for concurrent use.
type Outbox struct {
	db    *bolt.DB
	wake  chan struct{}
	retry atomic.Bool // an operator asked to retry now
	done  chan doneReq
}

type doneReq struct {
	id  uint64
	err chan error
}

// New returns the outbox in db (opened by store.Open).
func New(db *bolt.DB) *Outbox {
	o := &Outbox{db: db, wake: make(chan struct{}, 1), done: make(chan doneReq, 64)}
	go o.commitDone()
	return o
}

// commitDone removes delivered entries, each Done waiting for its own
// removal to be on disk. Removals that arrive while a commit runs (from
// parallel SMTP sessions) share the next one: one fsync for several
// mails, with no added wait when there is only one.
func (o *Outbox) commitDone() {
	for first := range o.done {
		reqs := []doneReq{first}
	more:
		for len(reqs) < 256 {
			select {
			case r := <-o.done:
				reqs = append(reqs, r)
			default:
				break more
			}
		}
		err := o.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(store.BucketOutbox)
			for _, r := range reqs {
				if err := b.Delete(key(r.id)); err != nil {
					return err
				}
			}
			return nil
		})
		for _, r := range reqs {
			r.err <- err
		}
	}
}

// Wake returns a channel that receives after Kick: the mailer waits on it.
func (o *Outbox) Wake() <-chan struct{} { return o.wake }

// Kick tells the mailer that entries were added; it never blocks.
func (o *Outbox) Kick() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func key(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

// Put adds e inside tx, assigning its ID. Call Kick after tx commits.
func Put(tx *bolt.Tx, e *Entry) error {
	b := tx.Bucket(store.BucketOutbox)
	id, err := b.NextSequence()
	if err != nil {
		return err
	}
	e.ID = id
	return putIn(b, e)
}

func putIn(b *bolt.Bucket, e *Entry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode outbox entry: %w", err)
	}
	return b.Put(key(e.ID), v)
}

// Enqueue adds e in a transaction of its own and kicks the mailer.
func (o *Outbox) Enqueue(e *Entry) error {
	if err := o.db.Update(func(tx *bolt.Tx) error { return Put(tx, e) }); err != nil {
		return fmt.Errorf("enqueue mail: %w", err)
	}
	o.Kick()
	return nil
}

// Due returns up to limit pending entries whose next attempt is not after
// now, oldest first, and, when fewer than limit are due, the earliest next
// attempt of the others (zero when there is none).
func (o *Outbox) Due(now time.Time, limit int) (due []*Entry, next time.Time, err error) {
	err = o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(store.BucketOutbox).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			e, err := decode(v)
			if err != nil {
				return err
			}
			if !e.Next.After(now) {
				due = append(due, e)
				if len(due) == limit {
					// The caller comes back for more at once; the
					// earliest future attempt is not needed yet, and a
					// long backlog must not be decoded whole per batch.
					return nil
				}
				continue
			}
			if next.IsZero() || e.Next.Before(next) {
				next = e.Next
			}
		}
		return nil
	})
	return due, next, err
}

func decode(v []byte) (*Entry, error) {
	e := &Entry{}
	if err := json.Unmarshal(v, e); err != nil {
		return nil, fmt.Errorf("decode outbox entry: %w", err)
	}
	return e, nil
}

// Update rewrites a pending entry (after an attempt).
func (o *Outbox) Update(e *Entry) error {
	return o.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(store.BucketOutbox)
		if b.Get(key(e.ID)) == nil {
			return ErrNotFound
		}
		return putIn(b, e)
	})
}

// Done removes a delivered entry; it returns once that is on disk.
func (o *Outbox) Done(id uint64) error {
	r := doneReq{id: id, err: make(chan error, 1)}
	o.done <- r
	return <-r.err
}

// Bury moves an entry to the dead bucket with its last error.
func (o *Outbox) Bury(e *Entry, now time.Time) error {
	e.DeadAt = now
	return o.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(store.BucketOutbox).Delete(key(e.ID)); err != nil {
			return err
		}
		return putIn(tx.Bucket(store.BucketDead), e)
	})
}

// Stats is the queue at a glance, for metrics.
type Stats struct {
	Pending int
	Dead    int
	Oldest  time.Time // creation time of the oldest pending entry
}

// Stats counts the buckets.
func (o *Outbox) Stats() (Stats, error) {
	var s Stats
	err := o.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(store.BucketOutbox)
		s.Pending = b.Stats().KeyN
		s.Dead = tx.Bucket(store.BucketDead).Stats().KeyN
		if _, v := b.Cursor().First(); v != nil {
			e, err := decode(v)
			if err != nil {
				return err
			}
			s.Oldest = e.Created
		}
		return nil
	})
	return s, err
}

// List returns pending and dead entries, oldest first (without message bytes).
func (o *Outbox) List() (pending, dead []*Entry, err error) {
	err = o.db.View(func(tx *bolt.Tx) error {
		var err error
		if pending, err = list(tx.Bucket(store.BucketOutbox)); err != nil {
			return err
		}
		dead, err = list(tx.Bucket(store.BucketDead))
		return err
	})
	return pending, dead, err
}

func list(b *bolt.Bucket) ([]*Entry, error) {
	var out []*Entry
	err := b.ForEach(func(_, v []byte) error {
		e, err := decode(v)
		if err != nil {
			return err
		}
		e.Message = nil
		out = append(out, e)
		return nil
	})
	return out, err
}

// Retry moves a dead entry back to the queue, due now, with its attempts
// counted afresh; a pending entry is made due now.
func (o *Outbox) Retry(id uint64, now time.Time) error {
	err := o.db.Update(func(tx *bolt.Tx) error { return retry(tx, id, now) })
	if err == nil {
		o.retry.Store(true)
		o.Kick()
	}
	return err
}

// RetryRequested reports, once, that Retry or RetryAllDead was called: the
// mailer then tries at once even if it was waiting out a failed server.
func (o *Outbox) RetryRequested() bool { return o.retry.Swap(false) }

// RetryAllDead moves every dead entry back to the queue.
func (o *Outbox) RetryAllDead(now time.Time) (int, error) {
	n := 0
	err := o.db.Update(func(tx *bolt.Tx) error {
		var ids []uint64
		if err := tx.Bucket(store.BucketDead).ForEach(func(k, _ []byte) error {
			ids = append(ids, binary.BigEndian.Uint64(k))
			return nil
		}); err != nil {
			return err
		}
		for _, id := range ids {
			if err := retry(tx, id, now); err != nil {
				return err
			}
		}
		n = len(ids)
		return nil
	})
	if err == nil && n > 0 {
		o.retry.Store(true)
		o.Kick()
	}
	return n, err
}

func retry(tx *bolt.Tx, id uint64, now time.Time) error {
	pending, dead := tx.Bucket(store.BucketOutbox), tx.Bucket(store.BucketDead)
	v, from := dead.Get(key(id)), dead
	if v == nil {
		v, from = pending.Get(key(id)), pending
	}
	if v == nil {
		return ErrNotFound
	}
	e, err := decode(v)
	if err != nil {
		return err
	}
	if err := from.Delete(key(id)); err != nil {
		return err
	}
	if from == dead {
		e.Attempts = 0
		e.DeadAt = time.Time{}
		e.Created = now // give_up_after counts from the operator's retry
	}
	e.Next = now
	return putIn(pending, e)
}

// Drop deletes an entry, pending or dead.
func (o *Outbox) Drop(id uint64) error {
	return o.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{store.BucketOutbox, store.BucketDead} {
			b := tx.Bucket(name)
			if b.Get(key(id)) != nil {
				return b.Delete(key(id))
			}
		}
		return ErrNotFound
	})
}
