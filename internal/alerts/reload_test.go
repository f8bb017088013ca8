package alerts

import (
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/store"
)

// A reload keeps the series of unchanged rules (no second firing mail,
// the resolved mail still comes), applies a changed rule from its next
// reading, forgets a removed rule's alerts without a mail, and starts an
// added rule at once.
func TestReloadKeepsChangesAndForgetsByRuleName(t *testing.T) {
	f := newFixture(t)
	expect(t, "hot fires", f.read("gh/a/t", `{"temp":31}`, t0), "fire")
	expect(t, "once fires", f.read("o/a", `{"temp":31}`, t0), "fire")
	expect(t, "slow pends", f.read("slow/x", `{"temp":35}`, t0), "pend")
	old := f.engine

	next := strings.Replace(ruleset, "for: 2m", "for: 5m", 1)                                                      // slow changed
	next = strings.Replace(next, `  - {name: once, topic: "o/+", field: temp, above: 30, notify_resolved: false}`, // once removed
		`  - {name: cold, topic: "c/+", field: temp, below: 0}`, 1) // cold added
	f.engine = compile(t, next)
	if n := f.tracker.Reload(f.engine, nil); n != 1 {
		t.Fatalf("Reload forgot %d series, want once's one", n)
	}

	expect(t, "hot still firing: nothing new", f.read("gh/a/t", `{"temp":32}`, t0.Add(time.Second)), "")
	if _, ok := f.tracker.Lookup("once", "o/a"); ok {
		t.Error("the removed rule's series is still tracked")
	}
	expect(t, "the old for: 2m no longer fires", f.due(t0.Add(3*time.Minute)), "")
	expect(t, "the new for: 5m fires", f.due(t0.Add(5*time.Minute)), "fire")
	expect(t, "the added rule works", f.read("c/a", `{"temp":-1}`, t0.Add(6*time.Minute)), "fire")

	// A reading the rules in force before the reload evaluated still lands
	// on the series, under its current rule.
	for _, rd := range old.Evaluate(&event.Event{Topic: "gh/a/t", Payload: []byte(`{"temp":20}`), Received: t0.Add(7 * time.Minute)}, nil) {
		tr, ok, err := f.tracker.Observe(&rd)
		if err != nil || !ok || tr.Kind != Resolve || tr.Notification.Rule != f.engine.Rule("hot") {
			t.Fatalf("old reading: %v %v %v, want a resolve under the current rule", tr.Kind, ok, err)
		}
		f.tracker.Settle(tr)
	}
	for _, rd := range old.Evaluate(&event.Event{Topic: "o/b", Payload: []byte(`{"temp":31}`), Received: t0.Add(8 * time.Minute)}, nil) {
		if _, ok, err := f.tracker.Observe(&rd); ok || err != nil {
			t.Fatalf("a reading of the removed rule made a transition (%v, %v)", ok, err)
		}
	}
}

// A stored series that does not decode is kept aside in the quarantine
// with its bytes and reported, not deleted; the others load.
func TestLoadQuarantinesAnUnreadableSeries(t *testing.T) {
	db := openStore(t)
	f := newFixture(t)
	expect(t, "hot fires", f.read("gh/a/t", `{"temp":31}`, t0), "fire")
	s, _ := f.tracker.Lookup("hot", "gh/a/t")
	put(t, db, s)
	if err := db.Update(func(tx *store.Tx) error {
		return tx.Bucket(store.BucketAlerts).Put([]byte("hot\x00gh/b/t"), []byte("{\x00\x00\x00"))
	}); err != nil {
		t.Fatal(err)
	}
	var reported []store.Quarantined
	g := newFixtureWith(t, ruleset, Options{Start: t0, OnQuarantine: func(q store.Quarantined) { reported = append(reported, q) }})
	if n, err := g.tracker.Load(db, g.engine); err != nil || n != 1 {
		t.Fatalf("Load: %d series, %v; want the readable one", n, err)
	}
	if len(reported) != 1 || reported[0].Bucket != "alerts" || string(reported[0].Raw) != "{\x00\x00\x00" {
		t.Fatalf("reported %+v, want the unreadable record with its bytes", reported)
	}
	_ = db.View(func(tx *store.Tx) error {
		if tx.Bucket(store.BucketAlerts).Get([]byte("hot\x00gh/b/t")) != nil || len(store.QuarantinedFrom(tx, store.BucketAlerts)) != 1 {
			t.Error("the unreadable record was not moved to the quarantine")
		}
		return nil
	})
}
