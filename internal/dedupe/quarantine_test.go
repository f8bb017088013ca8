package dedupe

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/store"
)

// A series or rule value that is not what the gate writes is quarantined
// by the admission that meets it, reported once, and the notification is
// decided as if there were no state: it is admitted.
func TestUnreadableStateIsQuarantinedAndStartsAfresh(t *testing.T) {
	for _, c := range []struct {
		name   string
		bucket []byte
		key    string
		cause  string
	}{
		{"series", store.BucketSeries, "hot\x00s/a/t", "decode last mail time"},
		{"rules", store.BucketRules, "hot", "decode rate window"},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := openDB(t, filepath.Join(t.TempDir(), "s.db"))
			defer db.Close()
			clk := &clock{t: time.Unix(1_700_000_000, 0)}
			g := New(db, clk.now)
			var mu sync.Mutex
			var reported []store.Quarantined
			g.OnQuarantine = func(q store.Quarantined) {
				mu.Lock()
				reported = append(reported, q)
				mu.Unlock()
			}
			if err := db.Update(func(tx *store.Tx) error {
				return tx.Bucket(c.bucket).Put([]byte(c.key), []byte("\x00\x01\x02"))
			}); err != nil {
				t.Fatal(err)
			}
			var m mails
			cand := Candidate{Rule: "hot", Series: "s/a/t", Cooldown: 10 * time.Minute, Limit: 5, Per: time.Hour}
			v, err := g.Admit(cand, m.enqueue)
			if err != nil || !v.Admitted {
				t.Fatalf("admit over unreadable %s state: %+v, %v", c.name, v, err)
			}
			if len(reported) != 1 || reported[0].Bucket != c.name || string(reported[0].Key) != c.key || !strings.Contains(reported[0].Error, c.cause) {
				t.Fatalf("reported %+v", reported)
			}
			// The fresh state the admission wrote works: the cooldown holds.
			if v, _ := g.Admit(cand, m.enqueue); v.Admitted || v.Reason != ReasonCooldown {
				t.Errorf("second admit %+v, want held back by the cooldown", v)
			}
			_ = db.View(func(tx *store.Tx) error {
				if q := store.QuarantinedFrom(tx, c.bucket); len(q) != 1 || string(q[0].Raw) != "\x00\x01\x02" {
					t.Errorf("quarantine %+v, want the bytes as found", q)
				}
				return nil
			})
			if len(reported) != 1 {
				t.Errorf("%d reports, want 1", len(reported))
			}
		})
	}
}

// A notification held back over an unreadable rule value quarantines it
// and starts the count afresh with itself.
func TestHoldQuarantinesAnUnreadableRule(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "s.db"))
	defer db.Close()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	g := New(db, clk.now)
	n := 0
	g.OnQuarantine = func(store.Quarantined) { n++ }
	var m mails
	cand := Candidate{Rule: "hot", Series: "s/a/t", Cooldown: time.Hour}
	_, _ = g.Admit(cand, m.enqueue)
	if err := db.Update(func(tx *store.Tx) error {
		return tx.Bucket(store.BucketRules).Put([]byte("hot"), []byte("bad"))
	}); err != nil {
		t.Fatal(err)
	}
	// Held back by the cooldown: the count is written over the bad value.
	if v, err := g.Admit(cand, m.enqueue); err != nil || v.Admitted {
		t.Fatalf("hold over an unreadable rule: %+v, %v", v, err)
	}
	if n != 1 {
		t.Errorf("%d reports, want 1", n)
	}
	_ = db.View(func(tx *store.Tx) error {
		if st, _ := g.loadRule(tx, "hot"); st.held != 1 {
			t.Errorf("held %d after the hold, want 1", st.held)
		}
		return nil
	})
}
