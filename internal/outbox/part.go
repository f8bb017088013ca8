package outbox

import (
	"slices"
	"time"

	"github.com/alertd/alertd/internal/store"
)

// BuryRecipients gives up on some recipients of a pending entry: they get
// a dead letter of their own (a copy of e addressed to them only, with a
// new id and reason as its error), and the pending entry no longer lists
// them. Both happen in one transaction, so a crash leaves either the old
// entry or the split, never a recipient in both. e is updated to match.
func (o *Outbox) BuryRecipients(e *Entry, rcpts []string, reason string, now time.Time) (dead *Entry, err error) {
	d := *e
	d.To = slices.Clone(rcpts)
	d.Delivered = nil
	d.LastError = reason
	d.DeadAt = now
	keep := slices.DeleteFunc(slices.Clone(e.To), func(r string) bool { return slices.Contains(rcpts, r) })
	err = o.db.Update(func(tx *store.Tx) error {
		pending := tx.Bucket(store.BucketOutbox)
		if pending.Get(key(e.ID)) == nil {
			return ErrNotFound
		}
		id, err := pending.NextSequence() // ids are shared by both buckets
		if err != nil {
			return err
		}
		d.ID = id
		if err := putIn(tx.Bucket(store.BucketDead), &d); err != nil {
			return err
		}
		upd := *e
		upd.To = keep
		return putIn(pending, &upd)
	})
	if err != nil {
		return nil, err
	}
	e.To = keep
	return &d, nil
}
