package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/store"
)

// openStore is a store for one test, checked for consistency at cleanup.
func openStore(t *testing.T) *store.DB {
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
	return db
}

// countingWriter counts the checkpoint's transactions and the keys each
// added to last_seen; after each it runs then (which may move a clock or
// fail).
type countingWriter struct {
	db    *store.DB
	added []int
	then  func() error
}

func (w *countingWriter) Update(fn func(*store.Tx) error) error {
	return w.db.Update(func(tx *store.Tx) error {
		before := keys(tx, store.BucketLastSeen)
		if err := fn(tx); err != nil {
			return err
		}
		w.added = append(w.added, keys(tx, store.BucketLastSeen)-before)
		if w.then != nil {
			return w.then()
		}
		return nil
	})
}

// keys counts bucket's keys as tx sees them (Stats sees only committed pages).
func keys(tx *store.Tx, bucket []byte) int {
	n := 0
	_ = tx.Bucket(bucket).ForEach(func(_, _ []byte) error { n++; return nil })
	return n
}

// restart loads the store into a new tracker, as alertd does at start.
func restart(t *testing.T, db *store.DB, ruleset string, o Options) *fixture {
	t.Helper()
	f := newFixtureWith(t, ruleset, o)
	if _, err := f.tracker.Load(db, f.engine); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestCheckpointWritesOnlyWhatChangedInSmallTransactions(t *testing.T) {
	db := openStore(t)
	f := newFixtureWith(t, fleet, Options{Start: t0})
	for i := range 2500 {
		f.read(fmt.Sprintf("hb/%04d", i), "x", t0.Add(time.Duration(i)*time.Millisecond))
	}
	w := &countingWriter{db: db}
	if left, err := f.tracker.Checkpoint(context.Background(), w); err != nil || left != 0 {
		t.Fatalf("checkpoint: %d left, %v", left, err)
	}
	if fmt.Sprint(w.added) != "[1000 1000 500]" {
		t.Errorf("keys written per transaction %v, want [1000 1000 500]", w.added)
	}
	w.added = nil
	if _, err := f.tracker.Checkpoint(context.Background(), w); err != nil || len(w.added) != 0 {
		t.Errorf("nothing changed: %d transactions (%v), want none", len(w.added), err)
	}
	later := t0.Add(time.Hour)
	f.read("hb/0007", "x", later)
	if _, err := f.tracker.Checkpoint(context.Background(), w); err != nil || len(w.added) != 1 {
		t.Fatalf("one series changed: %d transactions (%v), want 1", len(w.added), err)
	}

	g := restart(t, db, fleet, Options{Start: later})
	if n := g.tracker.Len(); n != 2500 {
		t.Fatalf("restored %d series, want 2500", n)
	}
	s, _ := g.tracker.Lookup("hb", "hb/0007")
	if !s.LastSeen.Equal(later) {
		t.Errorf("hb/0007 last seen %v, want the last reading, %v", s.LastSeen, later)
	}
	s, _ = g.tracker.Lookup("hb", "hb/2499")
	if want := t0.Add(2499 * time.Millisecond); !s.LastSeen.Equal(want) {
		t.Errorf("hb/2499 last seen %v, want %v", s.LastSeen, want)
	}
}

// pacedWriter records when each transaction began and how long it took.
type pacedWriter struct {
	db          *store.DB
	began, took []time.Duration
	t0          time.Time
}

func (w *pacedWriter) Update(fn func(*store.Tx) error) error {
	start := time.Now()
	err := w.db.Update(fn)
	w.began, w.took = append(w.began, start.Sub(w.t0)), append(w.took, time.Since(start))
	return err
}

// A periodic checkpoint leaves the store's writer free between two of its
// transactions at least as long as the first took; the one at shutdown,
// when nothing else writes, does not wait.
func TestCheckpointLeavesTheWriterFreeHalfTheTime(t *testing.T) {
	db := openStore(t)
	f := newFixtureWith(t, fleet, Options{Start: t0})
	for i := range 5000 {
		f.read(fmt.Sprintf("hb/%04d", i), "x", t0)
	}
	w := &pacedWriter{db: db, t0: time.Now()}
	if _, err := f.tracker.Checkpoint(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	if len(w.began) != 5 {
		t.Fatalf("%d transactions, want 5", len(w.began))
	}
	for i := 1; i < len(w.began); i++ {
		if free := w.began[i] - w.began[i-1] - w.took[i-1]; free < w.took[i-1] {
			t.Errorf("transaction %d took %v and the next began %v after it", i-1, w.took[i-1], free)
		}
	}
}

// At shutdown the checkpoint has a time budget: what it could not write
// stays dirty and is written by the next checkpoint.
func TestCheckpointStopsAtItsDeadlineAndLeavesTheRestDirty(t *testing.T) {
	db := openStore(t)
	c := &clock{now: t0}
	f := newFixtureWith(t, fleet, Options{Start: t0, Now: c.Now})
	for i := range 5000 {
		f.read(fmt.Sprintf("hb/%04d", i), "x", t0)
	}
	w := &countingWriter{db: db, then: func() error { c.now = c.now.Add(2 * time.Second); return nil }}
	left, err := f.tracker.Flush(w, t0.Add(5*time.Second))
	if err != nil || left != 2000 || len(w.added) != 3 {
		t.Fatalf("2 s per transaction, 5 s budget: %d transactions, %d left, %v; want 3 and 2000 left", len(w.added), left, err)
	}
	if n := f.tracker.Dirty(); n != 2000 {
		t.Errorf("%d dirty after the deadline, want the 2000 not written", n)
	}
	if _, err := f.tracker.Checkpoint(context.Background(), w); err != nil || f.tracker.Dirty() != 0 {
		t.Fatalf("the next checkpoint: %v, %d dirty", err, f.tracker.Dirty())
	}
	if n := restart(t, db, fleet, Options{Start: t0}).tracker.Len(); n != 5000 {
		t.Errorf("restored %d series, want 5000", n)
	}

	// A cancelled context stops it the same way.
	f.read("hb/late", "x", t0.Add(time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if left, err := f.tracker.Checkpoint(ctx, w); left != 1 || err != nil {
		t.Errorf("cancelled: %d left, %v; want 1 left", left, err)
	}
}

func TestAFailedCheckpointKeepsEverythingForTheNext(t *testing.T) {
	db := openStore(t)
	f := newFixtureWith(t, fleet, Options{Start: t0, Budgets: map[string]int{"hb": 3}})
	for i := range 3 {
		f.read(fmt.Sprintf("hb/%d", i), "x", t0)
	}
	if _, err := f.tracker.Checkpoint(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	f.read("hb/3", "x", t0.Add(time.Minute)) // evicts hb/0, which is stored
	f.read("hb/1", "x", t0.Add(time.Minute))
	disk := errors.New("disk full")
	left, err := f.tracker.Checkpoint(context.Background(), &countingWriter{db: db, then: func() error { return disk }})
	if !errors.Is(err, disk) || left != 3 {
		t.Fatalf("failing store: %d left, %v; want 3 (a deletion, two last-seen times) and the error", left, err)
	}
	if _, err := f.tracker.Checkpoint(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	g := restart(t, db, fleet, Options{Start: t0})
	if got, want := g.tracked("hb", "hb/0", "hb/1", "hb/2", "hb/3"), "-hb/0 hb/1 hb/2 hb/3"; got != want {
		t.Errorf("after the retry the store holds %s, want %s", got, want)
	}
}

// Evicted series are deleted from the store, or a restart would bring
// the flood back; a key tracked again after its eviction is kept.
func TestEvictedSeriesDoNotComeBackAfterARestart(t *testing.T) {
	db := openStore(t)
	f := newFixtureWith(t, fleet, Options{Start: t0, Budgets: map[string]int{"hb": 2}})
	f.read("hb/dev", "x", t0)
	f.read("hb/dev", "x", t0.Add(time.Second))
	f.read("hb/junk1", "x", t0.Add(2*time.Second))
	expect(t, "a firing silence series has a record too", f.due(t0.Add(10*time.Minute+2*time.Second)), "fire,fire")
	put(t, db, mustLookup(t, f, "hb", "hb/junk1"))
	expect(t, "dev reports again", f.read("hb/dev", "x", t0.Add(11*time.Minute)), "resolve")
	expect(t, "junk1 reports again", f.read("hb/junk1", "x", t0.Add(11*time.Minute)), "resolve")
	put(t, db, mustLookup(t, f, "hb", "hb/junk1")) // its record, back to ok
	f.read("hb/dev", "x", t0.Add(11*time.Minute+30*time.Second))
	if _, err := f.tracker.Checkpoint(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	f.read("hb/junk2", "x", t0.Add(12*time.Minute)) // evicts junk1 (seen twice, but longest ago)
	f.read("hb/junk3", "x", t0.Add(13*time.Minute)) // evicts junk2 (seen once), never stored
	f.read("hb/junk1", "x", t0.Add(14*time.Minute)) // junk1 again, evicting junk3
	if _, err := f.tracker.Checkpoint(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	g := restart(t, db, fleet, Options{Start: t0.Add(time.Hour)})
	if got, want := g.tracked("hb", "hb/dev", "hb/junk1", "hb/junk2", "hb/junk3"), "hb/dev hb/junk1 -hb/junk2 -hb/junk3"; got != want {
		t.Errorf("restored %s, want %s", got, want)
	}
	if s, _ := g.tracker.Lookup("hb", "hb/junk1"); !s.LastSeen.Equal(t0.Add(14*time.Minute)) || s.State != OK {
		t.Errorf("junk1 restored %v last seen %v, want ok, last seen at its reading after the eviction", s.State, s.LastSeen)
	}

	f.read("hb/junk4", "x", t0.Add(15*time.Minute)) // evicts junk1 again, stored this time
	if _, err := f.tracker.Checkpoint(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *store.Tx) error {
		for _, b := range [][]byte{store.BucketAlerts, store.BucketLastSeen} {
			if v := tx.Bucket(b).Get(seriesKey("hb", "hb/junk1")); v != nil {
				return fmt.Errorf("bucket %s still holds evicted hb/junk1: %q", b, v)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

func mustLookup(t *testing.T, f *fixture, rule, topic string) Series {
	t.Helper()
	s, ok := f.tracker.Lookup(rule, topic)
	if !ok {
		t.Fatalf("%s %s not tracked", rule, topic)
	}
	return s
}

// A store flooded by a version without budgets recovers at start: Load
// evicts what is over budget, junk first, and deletes it from the store.
func TestLoadAppliesTheLimits(t *testing.T) {
	db := openStore(t)
	old := newFixtureWith(t, fleet, Options{Start: t0})
	hb := old.engine.Rule("hb")
	// Written as versions before the last_seen bucket did: records only,
	// the devices seen last, after the flood.
	for i := range 50 {
		put(t, db, Series{Rule: hb, Topic: fmt.Sprintf("hb/junk%02d", i), LastSeen: t0.Add(time.Duration(i) * time.Second)})
	}
	for i := range 5 {
		put(t, db, Series{Rule: hb, Topic: fmt.Sprintf("hb/dev%d", i), LastSeen: t0.Add(time.Hour)})
	}
	put(t, db, Series{Rule: hb, Topic: "hb/down", State: Firing, Since: t0, LastSeen: t0, Notified: true, Thread: "x@alertd"})

	var warned []Warning
	f := restart(t, db, fleet, Options{Start: t0.Add(2 * time.Hour), Budgets: map[string]int{"hb": 8},
		Warn: func(w Warning) { warned = append(warned, w) }})
	if got, want := f.tracked("hb", "hb/dev0", "hb/dev4", "hb/down", "hb/junk48", "hb/junk49", "hb/junk47"),
		"hb/dev0 hb/dev4 hb/down hb/junk48 hb/junk49 -hb/junk47"; got != want {
		t.Fatalf("loaded %s, want the devices, the firing series and the two most recent junk topics", got)
	}
	if len(warned) != 1 || !warned[0].AtLoad || warned[0].Rule != "hb" || warned[0].Evicted != 48 || warned[0].Series != 8 {
		t.Errorf("warnings %+v, want one for hb at load, 48 evicted", warned)
	}
	n := 0
	_ = db.View(func(tx *store.Tx) error { n = keys(tx, store.BucketAlerts); return nil })
	if n != 8 {
		t.Errorf("the store holds %d records after the start, want 8", n)
	}

	// Readings counted once are evicted first at load too.
	once := openStore(t)
	g := newFixtureWith(t, fleet, Options{Start: t0})
	g.read("hb/old", "x", t0)
	g.read("hb/old", "x", t0)
	g.read("hb/new", "x", t0.Add(time.Hour))
	if _, err := g.tracker.Checkpoint(context.Background(), once); err != nil {
		t.Fatal(err)
	}
	h := restart(t, once, fleet, Options{Start: t0, Budgets: map[string]int{"hb": 1}})
	if got, want := h.tracked("hb", "hb/old", "hb/new"), "hb/old -hb/new"; got != want {
		t.Errorf("loaded %s, want %s (new was seen once)", got, want)
	}
}

// A record's own last_seen and the last_seen bucket: the later counts.
func TestLoadTakesTheLaterOfTheTwoLastSeenTimes(t *testing.T) {
	db := openStore(t)
	f := newFixtureWith(t, fleet, Options{Start: t0})
	hb := f.engine.Rule("hb")
	put(t, db, Series{Rule: hb, Topic: "hb/rec-later", LastSeen: t0.Add(time.Hour)})
	put(t, db, Series{Rule: hb, Topic: "hb/bucket-later", LastSeen: t0})
	f.read("hb/rec-later", "x", t0)
	f.read("hb/bucket-later", "x", t0.Add(2*time.Hour))
	if _, err := f.tracker.Checkpoint(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	g := restart(t, db, fleet, Options{Start: t0})
	if s := mustLookup(t, g, "hb", "hb/rec-later"); !s.LastSeen.Equal(t0.Add(time.Hour)) {
		t.Errorf("rec-later: %v", s.LastSeen)
	}
	if s := mustLookup(t, g, "hb", "hb/bucket-later"); !s.LastSeen.Equal(t0.Add(2 * time.Hour)) {
		t.Errorf("bucket-later: %v", s.LastSeen)
	}
}

// Keys that cannot be used are deleted at load, in both buckets.
func TestLoadDeletesWhatItCannotUse(t *testing.T) {
	db := openStore(t)
	if err := db.Update(func(tx *store.Tx) error {
		recs, seen := tx.Bucket(store.BucketAlerts), tx.Bucket(store.BucketLastSeen)
		ok, _ := json.Marshal(record{State: OK, LastSeen: t0})
		for k, v := range map[string][]byte{
			"gone\x00a": ok, "hb\x00bad": []byte("{"), "hot\x00ok-threshold": ok, "no-separator": ok,
		} {
			if err := recs.Put([]byte(k), v); err != nil {
				return err
			}
		}
		v := make([]byte, lastSeenLen)
		encodeLastSeen(v, t0, 2)
		for _, k := range []string{"gone\x00b", "hot\x00t/1", "hb\x00fine"} {
			if err := seen.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return seen.Put([]byte("hb\x00short"), []byte{1, 2})
	}); err != nil {
		t.Fatal(err)
	}
	f := restart(t, db, fleet, Options{Start: t0})
	if n := f.tracker.Len(); n != 1 {
		t.Errorf("%d series loaded, want only hb/fine", n)
	}
	_ = db.View(func(tx *store.Tx) error {
		for _, b := range [][]byte{store.BucketAlerts, store.BucketLastSeen} {
			_ = tx.Bucket(b).ForEach(func(k, _ []byte) error {
				if string(k) != "hb\x00fine" {
					t.Errorf("bucket %s still holds %q", b, k)
				}
				return nil
			})
		}
		return nil
	})
}
