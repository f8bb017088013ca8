package outbox

import (
	"bytes"

	"github.com/alertd/alertd/internal/store"
)

// Overview is what a status page shows of the queue.
type Overview struct {
	Stats
	// Head is the oldest readable pending entry (nil when none): its
	// attempts and last error say why mail is waiting.
	Head *Entry
	// DeadLetters are the dead entries queued last, newest first, at most
	// the limit asked for; Stats.Dead counts them all.
	DeadLetters []*Entry
}

// Overview reads the counts, the head of the queue and the last dead
// letters in one read transaction. Unlike List it decodes no pending
// entry but the head, so a backlog of thousands costs a page refresh
// nothing. Entries come without their message bytes; the unreadable ones
// it meets are quarantined and not counted, as Stats does.
func (o *Outbox) Overview(deadLimit int) (Overview, error) {
	var ov Overview
	var bad []unreadable
	err := o.db.View(func(tx *store.Tx) error {
		b := tx.Bucket(store.BucketOutbox)
		ov.Pending = b.Len()
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if e, err := decode(v); err == nil {
				e.Message = nil
				ov.Head, ov.Oldest = e, e.Created
				break
			}
			bad = append(bad, unreadable{store.BucketOutbox, bytes.Clone(k)})
			ov.Pending--
		}
		d := tx.Bucket(store.BucketDead)
		ov.Dead = d.Len()
		dc := d.Cursor()
		for k, v := dc.Last(); k != nil && len(ov.DeadLetters) < deadLimit; k, v = dc.Prev() {
			e, err := decode(v)
			if err != nil {
				bad = append(bad, unreadable{store.BucketDead, bytes.Clone(k)})
				ov.Dead--
				continue
			}
			e.Message = nil
			ov.DeadLetters = append(ov.DeadLetters, e)
		}
		return nil
	})
	if err != nil {
		return Overview{}, err
	}
	_ = o.quarantine(bad) // a failed move leaves the counts right; Due reports it
	return ov, nil
}
