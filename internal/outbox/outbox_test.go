package outbox

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/store"
)

var t0 = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

// testOutbox is an outbox in a fresh store, checked for consistency when
// the test ends, with the entries it quarantines recorded.
type testOutbox struct {
	*Outbox
	db *store.DB
	mu sync.Mutex
	q  []store.Quarantined
}

func newTestOutbox(t *testing.T) *testOutbox {
	t.Helper()
	db, _, err := store.Open(filepath.Join(t.TempDir(), "alertd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Check(); err != nil {
			t.Errorf("store inconsistent: %v", err)
		}
		db.Close()
	})
	o := &testOutbox{Outbox: New(db), db: db}
	o.OnQuarantine = func(q store.Quarantined) {
		o.mu.Lock()
		o.q = append(o.q, q)
		o.mu.Unlock()
	}
	return o
}

func (o *testOutbox) reported() []store.Quarantined {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.q)
}

// enqueue queues n mails created a minute apart, due at t0.
func (o *testOutbox) enqueue(t *testing.T, n int) []uint64 {
	t.Helper()
	var ids []uint64
	for i := range n {
		e := &Entry{Rule: "hot", To: []string{"ops@example.org"}, Subject: "mail", Message: []byte("m\r\n"),
			Created: t0.Add(time.Duration(i) * time.Minute), Next: t0}
		if err := o.Enqueue(e); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

// poison overwrites the stored value of id in bucket with bytes that are
// not an entry, as a damaged page would read.
func (o *testOutbox) poison(t *testing.T, bucket []byte, id uint64) {
	t.Helper()
	if err := o.db.Update(func(tx *store.Tx) error {
		return tx.Bucket(bucket).Put(key(id), []byte("{\"id\":\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	}); err != nil {
		t.Fatal(err)
	}
}

func ids(es []*Entry) []uint64 {
	var out []uint64
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

func TestDueSendsWhatIsBehindAnUnreadableEntry(t *testing.T) {
	o := newTestOutbox(t)
	all := o.enqueue(t, 5)
	o.poison(t, store.BucketOutbox, all[2])

	due, _, err := o.Due(t0, 64)
	if err != nil {
		t.Fatalf("due: %v", err)
	}
	want := []uint64{all[0], all[1], all[3], all[4]}
	if got := ids(due); !slices.Equal(got, want) {
		t.Fatalf("due %v, want %v: the entries behind the unreadable one in the same call", got, want)
	}
	q := o.reported()
	if len(q) != 1 || q[0].Bucket != "outbox" || q[0].KeyText() != "3" || !strings.Contains(q[0].Error, "decode outbox entry") {
		t.Fatalf("reported %+v, want entry 3 of outbox once", q)
	}
	if due, _, _ := o.Due(t0, 64); len(due) != 4 || len(o.reported()) != 1 {
		t.Errorf("second pass: %d due, %d reports; want 4 and still one", len(due), len(o.reported()))
	}

	st, err := o.Stats()
	if err != nil || st.Pending != 4 || !st.Oldest.Equal(t0) {
		t.Errorf("stats %+v (%v), want 4 pending, the oldest at t0", st, err)
	}
	un, err := o.Unreadable()
	if err != nil || len(un) != 1 || un[0].ID != all[2] || un[0].Bucket != "outbox" || un[0].Size == 0 || !strings.Contains(un[0].Error, `invalid character '\x00'`) {
		t.Fatalf("unreadable %+v (%v), want entry %d with its error and size", un, err, all[2])
	}
	if err := o.Retry(all[2], t0); !errors.Is(err, ErrUnreadable) {
		t.Errorf("retry of the unreadable entry: %v, want ErrUnreadable", err)
	}
	if err := o.Drop(all[2]); err != nil {
		t.Fatalf("drop: %v", err)
	}
	if un, _ := o.Unreadable(); len(un) != 0 {
		t.Errorf("after drop: %+v", un)
	}
	if err := o.Drop(all[2]); !errors.Is(err, ErrNotFound) {
		t.Errorf("second drop: %v, want ErrNotFound", err)
	}
}

func TestStatsCountsPastAnUnreadableOldest(t *testing.T) {
	o := newTestOutbox(t)
	all := o.enqueue(t, 3)
	o.poison(t, store.BucketOutbox, all[0])
	st, err := o.Stats()
	if err != nil {
		t.Fatalf("stats: %v (one bad entry must not hide the queue)", err)
	}
	if st.Pending != 2 || !st.Oldest.Equal(t0.Add(time.Minute)) {
		t.Errorf("stats %+v, want 2 pending, the oldest readable one created at %v", st, t0.Add(time.Minute))
	}
	if len(o.reported()) != 1 {
		t.Errorf("%d reports, want 1", len(o.reported()))
	}
}

func TestUnreadableDeadLetters(t *testing.T) {
	o := newTestOutbox(t)
	all := o.enqueue(t, 4)
	due, _, _ := o.Due(t0, 64)
	for _, e := range due {
		if err := o.Bury(e, t0); err != nil {
			t.Fatal(err)
		}
	}
	o.poison(t, store.BucketDead, all[1])
	o.poison(t, store.BucketDead, all[2])

	// Retry meets one first: it is quarantined, and said unreadable.
	if err := o.Retry(all[2], t0); !errors.Is(err, ErrUnreadable) || !strings.Contains(err.Error(), "decode outbox entry") {
		t.Fatalf("retry of a damaged dead entry: %v, want ErrUnreadable with the cause", err)
	}
	pending, dead, err := o.List()
	if err != nil || len(pending) != 0 || !slices.Equal(ids(dead), []uint64{all[0], all[3]}) {
		t.Fatalf("list: pending %v dead %v (%v), want dead %d and %d", ids(pending), ids(dead), err, all[0], all[3])
	}
	un, _ := o.Unreadable()
	if len(un) != 2 || un[0].ID != all[1] || un[1].ID != all[2] || un[0].Bucket != "dead" {
		t.Fatalf("unreadable %+v, want %d and %d from dead", un, all[1], all[2])
	}
	if n, err := o.RetryAllDead(t0); err != nil || n != 2 {
		t.Fatalf("retry all dead: %d, %v; want the 2 readable ones", n, err)
	}
	if due, _, _ := o.Due(t0, 64); !slices.Equal(ids(due), []uint64{all[0], all[3]}) {
		t.Errorf("due after retry: %v", ids(due))
	}
	if n := len(o.reported()); n != 2 {
		t.Errorf("%d reports, want 2", n)
	}
}

func TestRetryAllDeadQuarantinesWhatItCannotRead(t *testing.T) {
	o := newTestOutbox(t)
	all := o.enqueue(t, 2)
	due, _, _ := o.Due(t0, 64)
	for _, e := range due {
		if err := o.Bury(e, t0); err != nil {
			t.Fatal(err)
		}
	}
	o.poison(t, store.BucketDead, all[0])
	if n, err := o.RetryAllDead(t0); err != nil || n != 1 {
		t.Fatalf("retry all dead: %d, %v; want 1", n, err)
	}
	if un, _ := o.Unreadable(); len(un) != 1 || un[0].ID != all[0] {
		t.Errorf("unreadable %+v, want %d", un, all[0])
	}
}
