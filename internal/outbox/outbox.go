// Package outbox is alertd's durable mail queue in bbolt. A mail enters it
// (fully rendered, with its Message-ID and Date fixed) in the same
// transaction that admitted its notification, before the MQTT message that
// caused it is acknowledged. It leaves when the server accepted it for every
// recipient, or moves to the dead bucket with the reason when it never will
// be. Entries are keyed by a bbolt sequence, so a cursor walks them in the
// order they were queued.
//
// An entry that cannot be decoded is moved to the store's quarantine
// (store.Quarantine) by the first read that meets it, and that read goes
// on with the others: one damaged entry never stops the mail behind it.
// It keeps its id, so Unreadable lists it and Drop deletes it by that id.
package outbox

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

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

// Errors of Retry and Drop.
var (
	// ErrNotFound means no entry has the given id.
	ErrNotFound = errors.New("no such outbox entry")
	// ErrUnreadable means the entry could not be decoded: it is kept in
	// quarantine, where it can be dropped but never sent.
	ErrUnreadable = errors.New("outbox entry could not be read, so it cannot be retried")
)

// Outbox is the queue. Safe for concurrent use.
type Outbox struct {
	db    *store.DB
	wake  chan struct{}
	retry atomic.Bool // an operator asked to retry now

	// OnQuarantine, when set (before the outbox is used), is told of each
	// entry moved to quarantine, once the move is committed: the owner
	// logs and counts it there.
	OnQuarantine func(store.Quarantined)
}

// New returns the outbox in db (opened by store.Open). It starts nothing:
// the outbox has no goroutine to stop.
func New(db *store.DB) *Outbox {
	return &Outbox{db: db, wake: make(chan struct{}, 1)}
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
func Put(tx *store.Tx, e *Entry) error {
	b := tx.Bucket(store.BucketOutbox)
	id, err := b.NextSequence()
	if err != nil {
		return err
	}
	e.ID = id
	return putIn(b, e)
}

func putIn(b *store.Bucket, e *Entry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode outbox entry: %w", err)
	}
	return b.Put(key(e.ID), v)
}

// Enqueue adds e in a transaction of its own and kicks the mailer.
func (o *Outbox) Enqueue(e *Entry) error {
	if err := o.db.Update(func(tx *store.Tx) error { return Put(tx, e) }); err != nil {
		return fmt.Errorf("enqueue mail: %w", err)
	}
	o.Kick()
	return nil
}

// Due returns up to limit pending entries whose next attempt is not after
// now, oldest first, and, when fewer than limit are due, the earliest next
// attempt of the others (zero when there is none).
//
// An entry that does not decode is skipped, and moved to quarantine right
// after the read: the entries behind it are returned by this same call.
func (o *Outbox) Due(now time.Time, limit int) (due []*Entry, next time.Time, err error) {
	var bad []unreadable
	err = o.db.View(func(tx *store.Tx) error {
		c := tx.Bucket(store.BucketOutbox).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			e, err := decode(v)
			if err != nil {
				bad = append(bad, unreadable{store.BucketOutbox, bytes.Clone(k)})
				continue
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
	if err != nil {
		return nil, time.Time{}, err
	}
	// A failed move is reported, but what was read still goes out.
	return due, next, o.quarantine(bad)
}

// unreadable names an entry a read transaction could not decode.
type unreadable struct{ bucket, key []byte }

// quarantine moves the entries found unreadable by a read transaction,
// each if it is still there and still unreadable.
func (o *Outbox) quarantine(bad []unreadable) error {
	if len(bad) == 0 {
		return nil
	}
	err := o.db.Update(func(tx *store.Tx) error {
		for _, u := range bad {
			v := tx.Bucket(u.bucket).Get(u.key)
			if v == nil {
				continue // dropped meanwhile
			}
			if _, derr := decode(v); derr != nil {
				if err := o.moveAside(tx, u.bucket, u.key, v, derr); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("quarantine unreadable outbox entries: %w", err)
	}
	return nil
}

func (o *Outbox) moveAside(tx *store.Tx, bucket, k, v []byte, cause error) error {
	return store.Quarantine(tx, bucket, k, v, cause, o.OnQuarantine)
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
	return o.db.Update(func(tx *store.Tx) error {
		b := tx.Bucket(store.BucketOutbox)
		if b.Get(key(e.ID)) == nil {
			return ErrNotFound
		}
		return putIn(b, e)
	})
}

// Done removes a delivered entry; it returns once that is on disk. The
// removals of parallel SMTP sessions share a commit (the store's group
// commit); a lone one does not wait for company.
func (o *Outbox) Done(id uint64) error {
	return o.db.Batch(func(tx *store.Tx) error {
		return tx.Bucket(store.BucketOutbox).Delete(key(id))
	})
}

// Bury moves an entry to the dead bucket with its last error.
func (o *Outbox) Bury(e *Entry, now time.Time) error {
	e.DeadAt = now
	return o.db.Update(func(tx *store.Tx) error {
		if err := tx.Bucket(store.BucketOutbox).Delete(key(e.ID)); err != nil {
			return err
		}
		return putIn(tx.Bucket(store.BucketDead), e)
	})
}

// Stats is the queue at a glance, for metrics.
type Stats struct {
	Pending int       // readable entries waiting to be sent
	Dead    int       // entries in the dead letters
	Oldest  time.Time // creation time of the oldest readable pending entry
}

// Stats counts the buckets. The unreadable entries it meets looking for
// the oldest one are quarantined and not counted: they are not mail that
// will be sent. Only a failed read fails it: a failed move leaves the
// count right, and Due, which meets the same entries, reports it.
func (o *Outbox) Stats() (Stats, error) {
	ov, err := o.Overview(0)
	return ov.Stats, err
}

// List returns pending and dead entries, oldest first (without message
// bytes). Those that do not decode are left out and moved to quarantine,
// where Unreadable lists them.
func (o *Outbox) List() (pending, dead []*Entry, err error) {
	var bad []unreadable
	err = o.db.View(func(tx *store.Tx) error {
		pending = list(tx, store.BucketOutbox, &bad)
		dead = list(tx, store.BucketDead, &bad)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if err := o.quarantine(bad); err != nil {
		return nil, nil, err
	}
	return pending, dead, nil
}

func list(tx *store.Tx, name []byte, bad *[]unreadable) []*Entry {
	var out []*Entry
	_ = tx.Bucket(name).ForEach(func(k, v []byte) error {
		e, err := decode(v)
		if err != nil {
			*bad = append(*bad, unreadable{name, bytes.Clone(k)})
			return nil
		}
		e.Message = nil
		out = append(out, e)
		return nil
	})
	return out
}

// Unreadable is a queued mail that could not be decoded, kept in
// quarantine under its id.
type Unreadable struct {
	ID     uint64    `json:"id"`
	Bucket string    `json:"bucket"` // where it was: "outbox" (pending) or "dead"
	Error  string    `json:"error"`
	Size   int       `json:"size"` // bytes of the stored value
	At     time.Time `json:"quarantined_at"`
}

// Unreadable returns the quarantined pending and dead entries, by id.
func (o *Outbox) Unreadable() ([]Unreadable, error) {
	var out []Unreadable
	err := o.db.View(func(tx *store.Tx) error {
		for _, name := range [][]byte{store.BucketOutbox, store.BucketDead} {
			for _, q := range store.QuarantinedFrom(tx, name) {
				if len(q.Key) != 8 {
					continue // not an outbox key: nothing alertd wrote
				}
				out = append(out, Unreadable{ID: binary.BigEndian.Uint64(q.Key), Bucket: q.Bucket, Error: q.Error, Size: len(q.Raw), At: q.At})
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Unreadable) int { return cmp.Compare(a.ID, b.ID) })
	return out, err
}

// Retry moves a dead entry back to the queue, due now, with its attempts
// counted afresh; a pending entry is made due now.
//
// An entry that cannot be decoded, in quarantine or found so now (and
// then moved there), is not retried: the error wraps ErrUnreadable.
func (o *Outbox) Retry(id uint64, now time.Time) error {
	var cause string
	err := o.db.Update(func(tx *store.Tx) error {
		var err error
		cause, err = o.retryIn(tx, id, now)
		return err
	})
	switch {
	case err != nil:
		return err
	case cause != "":
		return fmt.Errorf("entry %d (%s): %w", id, cause, ErrUnreadable)
	}
	o.retry.Store(true)
	o.Kick()
	return nil
}

// RetryRequested reports, once, that Retry or RetryAllDead was called: the
// mailer then tries at once even if it was waiting out a failed server.
func (o *Outbox) RetryRequested() bool { return o.retry.Swap(false) }

// RetryAllDead moves every dead entry back to the queue.
func (o *Outbox) RetryAllDead(now time.Time) (int, error) {
	n := 0
	err := o.db.Update(func(tx *store.Tx) error {
		var ids []uint64
		if err := tx.Bucket(store.BucketDead).ForEach(func(k, _ []byte) error {
			ids = append(ids, binary.BigEndian.Uint64(k))
			return nil
		}); err != nil {
			return err
		}
		n = 0
		for _, id := range ids {
			cause, err := o.retryIn(tx, id, now)
			if err != nil {
				return err
			}
			if cause == "" {
				n++
			}
		}
		return nil
	})
	if err == nil && n > 0 {
		o.retry.Store(true)
		o.Kick()
	}
	return n, err
}

// retryIn moves entry id back to the queue, due now. When the entry cannot
// be decoded it says why instead (and quarantines it if it was not yet):
// that is not an error of tx, whose commit keeps the move.
func (o *Outbox) retryIn(tx *store.Tx, id uint64, now time.Time) (cause string, err error) {
	pending, dead := tx.Bucket(store.BucketOutbox), tx.Bucket(store.BucketDead)
	v, from, name := dead.Get(key(id)), dead, store.BucketDead
	if v == nil {
		v, from, name = pending.Get(key(id)), pending, store.BucketOutbox
	}
	if v == nil {
		for _, name := range [][]byte{store.BucketOutbox, store.BucketDead} {
			if q, ok := store.GetQuarantined(tx, name, key(id)); ok {
				return q.Error, nil
			}
		}
		return "", ErrNotFound
	}
	e, err := decode(v)
	if err != nil {
		return err.Error(), o.moveAside(tx, name, key(id), v, err)
	}
	if err := from.Delete(key(id)); err != nil {
		return "", err
	}
	if from == dead {
		e.Attempts = 0
		e.DeadAt = time.Time{}
		e.Created = now // give_up_after counts from the operator's retry
	}
	e.Next = now
	return "", putIn(pending, e)
}

// Drop deletes an entry, pending, dead or unreadable.
func (o *Outbox) Drop(id uint64) error {
	err := o.db.Update(func(tx *store.Tx) error {
		for _, name := range [][]byte{store.BucketOutbox, store.BucketDead} {
			b := tx.Bucket(name)
			if b.Get(key(id)) != nil {
				return b.Delete(key(id))
			}
			if ok, err := store.DropQuarantined(tx, name, key(id)); ok || err != nil {
				return err
			}
		}
		return ErrNotFound
	})
	if err == nil {
		o.Kick() // the mailer's next idle pass refreshes the queue metrics
	}
	return err
}
