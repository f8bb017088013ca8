package outbox

import (
	"slices"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/store"
)

// Overview gives a status page the queue's counts, why its head waits and
// the last dead letters with the server's words, past unreadable entries.
func TestOverviewShowsHeadAndLastDeadLetters(t *testing.T) {
	o := newTestOutbox(t)
	all := o.enqueue(t, 6)
	due, _, _ := o.Due(t0, 3) // the first three die
	for _, e := range due {
		e.LastError = "550 5.1.1 <ops@example.org>: mailbox unavailable"
		if err := o.Bury(e, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	o.poison(t, store.BucketOutbox, all[3]) // the head of the queue is unreadable
	o.poison(t, store.BucketDead, all[2])   // so is the last dead letter

	ov, err := o.Overview(1)
	if err != nil {
		t.Fatal(err)
	}
	if ov.Pending != 2 || ov.Head == nil || ov.Head.ID != all[4] || !ov.Oldest.Equal(ov.Head.Created) || ov.Head.Message != nil {
		t.Errorf("pending %d head %+v, want 2 pending, entry %d first, without its message", ov.Pending, ov.Head, all[4])
	}
	if ov.Dead != 2 || !slices.Equal(ids(ov.DeadLetters), []uint64{all[1]}) || ov.DeadLetters[0].LastError == "" {
		t.Errorf("dead %d letters %+v, want 2 dead, the last readable one (%d) with its error", ov.Dead, ov.DeadLetters, all[1])
	}
	if n := len(o.reported()); n != 2 {
		t.Errorf("%d quarantined, want the 2 unreadable entries", n)
	}
	if ov, _ := o.Overview(10); !slices.Equal(ids(ov.DeadLetters), []uint64{all[1], all[0]}) {
		t.Errorf("dead letters %v, want newest first", ids(ov.DeadLetters))
	}
}
