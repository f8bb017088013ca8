package alerts

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/event"
)

const fleet = `
defaults: {to: [ops@example.org], cooldown: 0s}
rules:
  - {name: hb, topic: "hb/+", silent_for: 10m}
  - {name: junk, topic: "j/+", silent_for: 10m}
  - {name: hot, topic: "t/+", field: temp, above: 30}
  - {name: slow, topic: "s/+", field: temp, above: 30, for: 2m}
`

// clock is an injected clock a test moves by hand.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

// tracked reports which of topics rule still tracks, as "a b -c" (-:
// not tracked), so a failure shows the whole table at once.
func (f *fixture) tracked(rule string, topics ...string) string {
	out := ""
	for i, tp := range topics {
		if i > 0 {
			out += " "
		}
		if _, ok := f.tracker.Lookup(rule, tp); !ok {
			out += "-"
		}
		out += tp
	}
	return out
}

func (f *fixture) observe(topic, payload string, at time.Time) (Transition, bool, error) {
	f.t.Helper()
	rds := f.engine.Evaluate(&event.Event{Topic: topic, Payload: []byte(payload), Received: at}, nil)
	if len(rds) != 1 {
		f.t.Fatalf("%s: %d readings, want 1", topic, len(rds))
	}
	return f.tracker.Observe(&rds[0])
}

func TestABudgetEvictsOnceSeenFirstThenLeastRecentlySeen(t *testing.T) {
	f := newFixtureWith(t, fleet, Options{Start: t0, Budgets: map[string]int{"hb": 3}})
	m := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	f.read("hb/a", "x", m(0))
	f.read("hb/a", "x", m(1))
	f.read("hb/b", "x", m(2))
	f.read("hb/b", "x", m(3))
	f.read("hb/c", "x", m(4)) // seen once
	f.read("hb/d", "x", m(5))
	if got, want := f.tracked("hb", "hb/a", "hb/b", "hb/c", "hb/d"), "hb/a hb/b -hb/c hb/d"; got != want {
		t.Fatalf("a new series over budget evicts the once-seen one although a and b are older: %s, want %s", got, want)
	}
	f.read("hb/d", "x", m(6))
	f.read("hb/e", "x", m(7))
	if got, want := f.tracked("hb", "hb/a", "hb/b", "hb/d", "hb/e"), "-hb/a hb/b hb/d hb/e"; got != want {
		t.Fatalf("with none seen once, the least recently seen goes: %s, want %s", got, want)
	}
	f.read("hb/b", "x", m(8))
	f.read("hb/f", "x", m(9))
	if got, want := f.tracked("hb", "hb/b", "hb/d", "hb/e", "hb/f"), "hb/b hb/d -hb/e hb/f"; got != want {
		t.Fatalf("once-seen first again: %s, want %s", got, want)
	}
	if n := f.tracker.Len(); n != 3 {
		t.Errorf("%d series, want the budget, 3", n)
	}
}

func TestABudgetNeverEvictsFiringPendingOrBusySeries(t *testing.T) {
	f := newFixtureWith(t, fleet, Options{Start: t0, Budgets: map[string]int{"hb": 2, "slow": 1, "hot": 1}})
	f.read("hb/firing", "x", t0)
	f.read("hb/saving", "x", t0.Add(time.Minute))
	expect(t, "the first goes silent", f.due(t0.Add(10*time.Minute)), "fire")
	unsaved := f.tracker.Due(t0.Add(11 * time.Minute)) // the second fires; not yet persisted
	expect(t, "the second goes silent", unsaved, "fire")
	if _, _, err := f.observe("hb/new", "x", t0.Add(12*time.Minute)); !errors.Is(err, ErrTooManySeries) {
		t.Fatalf("a new series beside a firing and a busy one: %v, want ErrTooManySeries", err)
	}
	f.tracker.Settle(unsaved[0])
	trs := f.read("hb/saving", "x", t0.Add(13*time.Minute))
	expect(t, "it reports again", trs, "resolve")
	f.read("hb/new", "x", t0.Add(14*time.Minute))
	if got, want := f.tracked("hb", "hb/firing", "hb/saving", "hb/new"), "hb/firing -hb/saving hb/new"; got != want {
		t.Fatalf("once back to ok it can make room: %s, want %s", got, want)
	}

	f.read("s/1", `{"temp": 35}`, t0) // pending
	if _, _, err := f.observe("s/2", `{"temp": 35}`, t0); !errors.Is(err, ErrTooManySeries) {
		t.Fatalf("a pending series is not evicted: %v, want ErrTooManySeries", err)
	}
	expect(t, "the pending one fires on time", f.due(t0.Add(2*time.Minute)), "fire")
	f.read("t/1", `{"temp": 35}`, t0)
	if _, _, err := f.observe("t/2", `{"temp": 35}`, t0); !errors.Is(err, ErrTooManySeries) {
		t.Fatalf("a firing threshold series is not evicted: %v, want ErrTooManySeries", err)
	}
	expect(t, "it clears", f.read("t/1", `{"temp": 20}`, t0.Add(time.Minute)), "resolve")
	expect(t, "and its room is free for another", f.read("t/2", `{"temp": 35}`, t0.Add(time.Minute)), "fire")
}

func TestAPendingSeriesThatClearsLeavesNoSeries(t *testing.T) {
	f := newFixtureWith(t, fleet, Options{Start: t0})
	f.read("s/1", `{"temp": 35}`, t0)
	f.read("s/1", `{"temp": 20}`, t0.Add(time.Minute))
	if n := f.tracker.Len(); n != 0 {
		t.Errorf("%d series after a for: that never elapsed, want 0 (an ok threshold series has nothing to keep)", n)
	}
	expect(t, "and no timer fires", f.due(t0.Add(time.Hour)), "")
}

func TestTheGlobalLimitEvictsTheBestCandidateOfAnyRule(t *testing.T) {
	f := newFixtureWith(t, fleet, Options{Start: t0, MaxSeries: 4})
	m := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	f.read("hb/a", "x", m(0))
	f.read("hb/a", "x", m(1))
	f.read("j/x", "x", m(2))
	f.read("hb/b", "x", m(3))
	f.read("j/y", "x", m(4))
	expect(t, "a breach of a new device", f.read("t/1", `{"temp": 35}`, m(5)), "fire")
	if got, want := f.tracked("junk", "j/x", "j/y"), "-j/x j/y"; got != want {
		t.Fatalf("the oldest once-seen series of any rule goes first: %s, want %s", got, want)
	}
	f.read("s/1", `{"temp": 35}`, m(6))
	f.read("j/z", "x", m(7))
	if got, want := f.tracked("hb", "hb/a", "hb/b")+" "+f.tracked("junk", "j/y", "j/z"), "hb/a -hb/b -j/y j/z"; got != want {
		t.Fatalf("then the next oldest once-seen: %s, want %s", got, want)
	}
	f.read("j/w", "x", m(8))
	if got, want := f.tracked("hb", "hb/a")+" "+f.tracked("junk", "j/z", "j/w"), "hb/a -j/z j/w"; got != want {
		t.Fatalf("%s, want %s", got, want)
	}
	f.read("j/w", "x", m(9))
	f.read("j/v", "x", m(10))
	if got, want := f.tracked("hb", "hb/a")+" "+f.tracked("junk", "j/w", "j/v"), "-hb/a j/w j/v"; got != want {
		t.Fatalf("with none seen once, the least recently seen of any rule: %s, want %s", got, want)
	}
	if n := f.tracker.Len(); n != 4 {
		t.Errorf("%d series, want limits.max_series, 4", n)
	}
}

// A flood of junk topics on a silence rule's filter: the rule's own
// devices, seen before it, stay tracked and still alert when they go
// silent; another rule's new device alerts at once.
func TestARulesDevicesKeepAlertingThroughAFlood(t *testing.T) {
	f := newFixtureWith(t, fleet, Options{Start: t0, MaxSeries: 1000, Budgets: map[string]int{"hb": 200, "hot": 200}})
	for i := range 3 {
		for d := range 10 {
			f.read(fmt.Sprintf("hb/dev%d", d), "x", t0.Add(time.Duration(i)*time.Second))
		}
	}
	for i := range 10_000 {
		f.read(fmt.Sprintf("hb/junk%d", i), "x", t0.Add(time.Minute))
	}
	for d := range 10 {
		if _, ok := f.tracker.Lookup("hb", fmt.Sprintf("hb/dev%d", d)); !ok {
			t.Fatalf("hb/dev%d was evicted by the flood", d)
		}
	}
	expect(t, "a new device's first breach", f.read("t/new", `{"temp": 35}`, t0.Add(2*time.Minute)), "fire")
	fired := map[string]bool{}
	for _, tr := range f.due(t0.Add(10*time.Minute + 2*time.Second)) {
		fired[tr.Notification.Series] = true
	}
	for d := range 10 {
		if !fired[fmt.Sprintf("hb/dev%d", d)] {
			t.Errorf("hb/dev%d went silent and did not fire", d)
		}
	}
	var series int
	var evicted uint64
	f.tracker.Stats(func(rule string, n int, ev uint64) {
		if rule == "hb" {
			series, evicted = n, ev
		}
	})
	if series != 200 || evicted != 10_000+10-200 {
		t.Errorf("hb: %d series, %d evicted; want 200 and %d", series, evicted, 10_000+10-200)
	}
}

func TestAtALimitOneWarningPerRulePerHour(t *testing.T) {
	c := &clock{now: t0}
	var warned []Warning
	f := newFixtureWith(t, fleet, Options{Start: t0, Now: c.Now, MaxSeries: 3, Budgets: map[string]int{"hb": 2},
		Warn: func(w Warning) { warned = append(warned, w) }})
	for i := range 10 {
		f.read(fmt.Sprintf("hb/%d", i), "x", t0)
	}
	if len(warned) != 1 {
		t.Fatalf("%d warnings, want 1: %+v", len(warned), warned)
	}
	w := warned[0]
	if w.Rule != "hb" || w.Filter != "hb/+" || w.Topic != "hb/2" || w.Limit != "max_series" || w.Max != 2 || w.Series != 2 || w.Evicted != 1 {
		t.Errorf("warning %+v", w)
	}
	c.now = t0.Add(59 * time.Minute)
	f.read("hb/x", "x", t0)
	if len(warned) != 1 {
		t.Fatalf("warned again within the hour: %+v", warned[1:])
	}
	c.now = t0.Add(time.Hour)
	f.read("hb/y", "x", t0)
	if len(warned) != 2 || warned[1].Evicted != 10 {
		t.Fatalf("an hour later: %+v, want a second warning counting 10 evicted", warned)
	}

	// The global limit: pending series take the room of hb's ok ones,
	// then, with nothing left to evict, a new series is dropped.
	c.now = t0.Add(3 * time.Hour)
	f.read("s/1", `{"temp": 35}`, t0)
	f.read("s/2", `{"temp": 35}`, t0)
	last := warned[len(warned)-1]
	if last.Rule != "slow" || last.Limit != "limits.max_series" || last.Max != 3 || last.Series != 2 {
		t.Errorf("warning at the global limit %+v", last)
	}
	f.read("s/3", `{"temp": 35}`, t0)
	if _, _, err := f.observe("s/4", `{"temp": 35}`, t0); !errors.Is(err, ErrTooManySeries) {
		t.Fatalf("a fourth pending series at limits.max_series 3: %v, want ErrTooManySeries", err)
	}
	if len(warned) != 3 {
		t.Errorf("%d warnings, want 3 (slow warned once)", len(warned))
	}
	stats := map[string]string{}
	f.tracker.Stats(func(rule string, n int, evicted uint64) {
		stats[rule] = fmt.Sprintf("%d series, %d evicted", n, evicted)
	})
	if stats["hb"] != "0 series, 12 evicted" || stats["slow"] != "3 series, 0 evicted" {
		t.Errorf("stats %v, want hb with 0 series and 12 evicted, slow with 3 and 0", stats)
	}
}

// checkInvariants verifies the tracker's bookkeeping against its table.
func checkInvariants(t *testing.T, tr *Tracker) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	counts := map[*ruleTable]int{}
	for k, s := range tr.series {
		if k != (key{s.Rule.Name, s.Topic}) || s.b.tab != tr.tables[s.Rule.Name] {
			t.Fatalf("%v: wrong key or table", k)
		}
		counts[s.b.tab]++
		if want := evictable(s); want != (s.b.listed != unlisted) {
			t.Fatalf("%v: evictable %v but listed %d", k, want, s.b.listed)
		}
		if (s.b.heapAt > 0) != !s.b.timerAt.IsZero() || (s.b.heapAt > 0 && tr.timers[s.b.heapAt-1] != s) {
			t.Fatalf("%v: heap index %d timer %v", k, s.b.heapAt, s.b.timerAt)
		}
	}
	for _, tab := range tr.tables {
		if tab.count != counts[tab] {
			t.Fatalf("rule %s counts %d series, has %d", tab.rule, tab.count, counts[tab])
		}
	}
	walk := func(l *seriesList, what string, each func(*Series)) int {
		n := 0
		var prev *Series
		for s := l.head; s != nil; s = s.b.links[l.by].next {
			if s.b.links[l.by].prev != prev || tr.series[key{s.Rule.Name, s.Topic}] != s {
				t.Fatalf("%s: broken at %s", what, s.Topic)
			}
			each(s)
			prev, n = s, n+1
		}
		if l.tail != prev {
			t.Fatalf("%s: tail is not the last", what)
		}
		return n
	}
	listed := 0
	for i, l := range tr.evictable {
		listed += walk(&l, "global list", func(s *Series) {
			if s.b.listed != int8(i+1) {
				t.Fatalf("%s on global list %d, listed %d", s.Topic, i+1, s.b.listed)
			}
		})
	}
	perRule := 0
	for _, tab := range tr.tables {
		for i := range tab.lists {
			perRule += walk(&tab.lists[i], "rule list", func(s *Series) {
				if s.b.tab != tab || s.b.listed != int8(i+1) {
					t.Fatalf("%s on the wrong rule list", s.Topic)
				}
			})
		}
	}
	if listed != perRule {
		t.Fatalf("%d series on global lists, %d on rule lists", listed, perRule)
	}
	if n := walk(&tr.dirty, "dirty list", func(s *Series) {
		if !s.b.dirty {
			t.Fatalf("%s on the dirty list, not dirty", s.Topic)
		}
	}); n != tr.ndirty {
		t.Fatalf("dirty list holds %d, ndirty %d", n, tr.ndirty)
	}
	for i, s := range tr.timers {
		if s.b.heapAt != i+1 || tr.series[key{s.Rule.Name, s.Topic}] != s {
			t.Fatalf("heap entry %d (%s) is stale or misplaced", i, s.Topic)
		}
	}
}

// Random readings, timers, saves, failed saves and checkpoints against
// small limits: after each step the lists, the heap, the counts and the
// dirty list agree with the table, and no limit is exceeded while
// something could be evicted.
func TestTheTableStaysConsistent(t *testing.T) {
	db := openStore(t)
	f := newFixtureWith(t, fleet, Options{Start: t0, MaxSeries: 12, Budgets: map[string]int{"hb": 5, "junk": 6, "hot": 4, "slow": 4}})
	rng := uint64(1)
	next := func(n int) int { // xorshift: the same sequence every run
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return int(rng % uint64(n))
	}
	now := t0
	var held []Transition
	var dropped, aborted, settled int
	for step := range 20_000 {
		now = now.Add(time.Duration(next(90)) * time.Second)
		topic := fmt.Sprintf("%s/%d", []string{"hb", "j", "t", "s"}[next(4)], next(15))
		payload := []string{"x", `{"temp": 35}`, `{"temp": 20}`}[next(3)]
		switch op := next(20); {
		case op < 14:
			for _, rd := range f.engine.Evaluate(&event.Event{Topic: topic, Payload: []byte(payload), Received: now}, nil) {
				tr, ok, err := f.tracker.Observe(&rd)
				if errors.Is(err, ErrTooManySeries) {
					dropped++
				} else if err != nil && !errors.Is(err, ErrBusy) {
					t.Fatal(err)
				}
				if ok {
					held = append(held, tr)
				}
			}
		case op < 16:
			held = append(held, f.tracker.Due(now)...)
		case op < 18 && len(held) > 0:
			i := next(len(held))
			if next(3) == 0 {
				f.tracker.Abort(held[i])
				aborted++
			} else {
				f.tracker.Settle(held[i])
				settled++
			}
			held = append(held[:i], held[i+1:]...)
		case op == 18:
			if _, err := f.tracker.Checkpoint(context.Background(), db); err != nil {
				t.Fatal(err)
			}
		}
		checkInvariants(t, f.tracker)
		if n := f.tracker.Len(); n > 12 {
			t.Fatalf("step %d: %d series over limits.max_series", step, n)
		}
	}
	var evicted uint64
	f.tracker.Stats(func(_ string, _ int, ev uint64) { evicted += ev })
	t.Logf("%d evicted, %d dropped, %d settled, %d aborted", evicted, dropped, settled, aborted)
	if evicted == 0 || dropped == 0 || aborted == 0 || settled == 0 {
		t.Error("the walk did not reach every path")
	}
}
