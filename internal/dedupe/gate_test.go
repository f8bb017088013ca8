package dedupe

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/store"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openDB(t *testing.T, path string) *store.DB {
	t.Helper()
	db, _, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// sent counts how many times enqueue ran (and committed).
type mails struct {
	mu         sync.Mutex
	suppressed []uint64
}

func (m *mails) enqueue(_ *store.Tx, suppressed uint64) error {
	m.mu.Lock()
	m.suppressed = append(m.suppressed, suppressed)
	m.mu.Unlock()
	return nil
}

func TestCooldownPerSeries(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "s.db"))
	defer db.Close()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	g := New(db, clk.now)
	var m mails
	hot := func(series string) Verdict {
		v, err := g.Admit(Candidate{Rule: "hot", Series: series, Cooldown: 10 * time.Minute}, m.enqueue)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := hot("s/a"); !v.Admitted {
		t.Fatal("first breach must mail")
	}
	if v := hot("s/a"); v.Admitted || v.Reason != ReasonCooldown {
		t.Fatalf("second breach inside cooldown: %+v", v)
	}
	// The count is per rule: the next mail of the rule, whatever its
	// series, reports what was held back since the rule's previous mail.
	if v := hot("s/b"); !v.Admitted || v.Suppressed != 1 {
		t.Fatalf("another series has its own cooldown: %+v, want admitted reporting 1 held back", v)
	}
	clk.add(9 * time.Minute)
	if v := hot("s/a"); v.Admitted {
		t.Fatal("still inside cooldown at 9m")
	}
	clk.add(time.Minute)
	v := hot("s/a")
	if !v.Admitted || v.Suppressed != 1 {
		t.Fatalf("after cooldown: %+v, want admitted reporting 1 held back", v)
	}
	if len(m.suppressed) != 3 {
		t.Fatalf("enqueued %d mails, want 3", len(m.suppressed))
	}
}

func TestRateLimitIsASlidingWindow(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "s.db"))
	defer db.Close()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	g := New(db, clk.now)
	var m mails
	admit := func(series string) Verdict {
		v, err := g.Admit(Candidate{Rule: "r", Series: series, Limit: 3, Per: time.Hour}, m.enqueue)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for i, s := range []string{"a", "b", "c"} {
		if !admit(s).Admitted {
			t.Fatalf("mail %d within the limit refused", i+1)
		}
		clk.add(10 * time.Minute)
	}
	if v := admit("d"); v.Admitted || v.Reason != ReasonRateLimit {
		t.Fatalf("4th mail in the hour: %+v", v)
	}
	clk.add(31 * time.Minute) // the first mail (t=0) left the window at t=60m
	if v := admit("e"); !v.Admitted || v.Suppressed != 1 {
		t.Fatalf("after the window reopened: %+v", v)
	}
	if v := admit("f"); v.Admitted {
		t.Fatal("window is full again")
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	c := Candidate{Rule: "hot", Series: "s/a", Cooldown: time.Hour, Limit: 5, Per: time.Hour}
	var m mails

	db := openDB(t, path)
	g := New(db, clk.now)
	if v, _ := g.Admit(c, m.enqueue); !v.Admitted {
		t.Fatal("first mail refused")
	}
	if v, _ := g.Admit(c, m.enqueue); v.Admitted {
		t.Fatal("duplicate admitted")
	}
	db.Close() // no flush: the held-back count was written with the verdict

	db = openDB(t, path)
	defer db.Close()
	g = New(db, clk.now)
	clk.add(time.Minute)
	if v, _ := g.Admit(c, m.enqueue); v.Admitted {
		t.Fatal("a breach right after a restart, inside the cooldown, must not mail again")
	}
	clk.add(time.Hour)
	v, _ := g.Admit(c, m.enqueue)
	if !v.Admitted || v.Suppressed != 2 {
		t.Fatalf("after the cooldown: %+v, want 2 held back (one before, one after the restart)", v)
	}
}

func TestConcurrentReadingsOfOneSeriesMailOnce(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "s.db"))
	defer db.Close()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	g := New(db, clk.now)
	var m mails
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := g.Admit(Candidate{Rule: "hot", Series: "s/a", Cooldown: time.Hour}, m.enqueue); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// Batch may run a closure more than once only when a sibling fails; none does.
	if len(m.suppressed) != 1 {
		t.Fatalf("%d mails for 32 simultaneous readings of one series, want 1", len(m.suppressed))
	}
}

// Last-mail times past every cooldown are pruned; recent ones stay, and
// the cooldown they carry still holds.
func TestPruneForgetsOnlyExpiredCooldowns(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "s.db"))
	defer db.Close()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	g := New(db, clk.now)
	var m mails
	for i := range 5 {
		_, _ = g.Admit(Candidate{Rule: "relay", Series: string(rune('a' + i)), Cooldown: 10 * time.Minute}, m.enqueue)
	}
	clk.add(time.Hour)
	recent := Candidate{Rule: "relay", Series: "recent", Cooldown: 10 * time.Minute}
	_, _ = g.Admit(recent, m.enqueue)
	n, err := g.Prune(clk.now().Add(-10*time.Minute), 2)
	if err != nil || n != 5 {
		t.Fatalf("pruned %d, %v; want the 5 old ones", n, err)
	}
	_ = db.View(func(tx *store.Tx) error {
		if l := tx.Bucket(store.BucketSeries).Len(); l != 1 {
			t.Errorf("%d entries left, want 1", l)
		}
		return nil
	})
	if v, _ := g.Admit(recent, m.enqueue); v.Admitted {
		t.Error("the recent cooldown was pruned")
	}
}
