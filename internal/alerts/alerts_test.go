package alerts

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

var t0 = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

const ruleset = `
defaults: {to: [ops@example.org], cooldown: 0s}
rules:
  - {name: hot, topic: "gh/+/t", field: temp, above: 30, hysteresis: 1.5, repeat: 4h}
  - {name: slow, topic: "slow/+", field: temp, above: 30, for: 2m}
  - {name: quiet, topic: "q/+", silent_for: 10m}
  - {name: once, topic: "o/+", field: temp, above: 30, notify_resolved: false}
`

type fixture struct {
	t       *testing.T
	engine  *rules.Engine
	tracker *Tracker
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, ruleset, Options{Start: t0})
}

// newFixtureWith compiles rules and starts a tracker with o.
func newFixtureWith(t *testing.T, rules string, o Options) *fixture {
	t.Helper()
	f := &fixture{t: t, engine: compile(t, rules)}
	f.tracker = New(o)
	return f
}

func compile(t *testing.T, ruleset string) *rules.Engine {
	t.Helper()
	cfg, err := config.Load(strings.NewReader(ruleset), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := rules.Compile(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// read feeds one reading at time at and returns the transitions it caused.
func (f *fixture) read(topic, payload string, at time.Time) []Transition {
	f.t.Helper()
	return f.readFrom("", topic, payload, at)
}

// readFrom is read of an event that came through source.
func (f *fixture) readFrom(source, topic, payload string, at time.Time) []Transition {
	f.t.Helper()
	var out []Transition
	for _, rd := range f.engine.Evaluate(&event.Event{Source: source, Topic: topic, Payload: []byte(payload), Received: at}, nil) {
		tr, ok, err := f.tracker.Observe(&rd)
		if err != nil {
			f.t.Fatalf("observe: %v", err)
		}
		if ok {
			f.tracker.Settle(tr) // as if persisted
			out = append(out, tr)
		}
	}
	return out
}

// due runs the timers at time at and settles what they decided, as if it
// was persisted.
func (f *fixture) due(at time.Time) []Transition {
	trs := f.tracker.Due(at)
	for _, tr := range trs {
		f.tracker.Settle(tr)
	}
	return trs
}

func kinds(trs []Transition) string {
	var s []string
	for _, tr := range trs {
		s = append(s, tr.Kind.String())
	}
	return strings.Join(s, ",")
}

func expect(t *testing.T, what string, trs []Transition, want string) {
	t.Helper()
	if got := kinds(trs); got != want {
		t.Fatalf("%s: transitions %q, want %q", what, got, want)
	}
}

func TestHysteresisStopsFlapping(t *testing.T) {
	f := newFixture(t)
	expect(t, "31 fires", f.read("gh/a/t", `{"temp":31}`, t0), "fire")
	expect(t, "still hot", f.read("gh/a/t", `{"temp":32}`, t0.Add(time.Second)), "")
	expect(t, "29.9 is inside the hysteresis band", f.read("gh/a/t", `{"temp":29.9}`, t0.Add(2*time.Second)), "")
	expect(t, "30.5 again", f.read("gh/a/t", `{"temp":30.5}`, t0.Add(3*time.Second)), "")
	expect(t, "28.5 is not below 28.5", f.read("gh/a/t", `{"temp":28.5}`, t0.Add(4*time.Second)), "")
	trs := f.read("gh/a/t", `{"temp":28.4}`, t0.Add(5*time.Second))
	expect(t, "28.4 clears", trs, "resolve")
	n := trs[0].Notification
	if n.State != rules.StateResolved || n.At.Sub(n.Since) != 5*time.Second || n.Value.Text != "28.4" {
		t.Errorf("resolved notification %+v", n)
	}
	expect(t, "normal stays quiet", f.read("gh/a/t", `{"temp":20}`, t0.Add(6*time.Second)), "")
}

func TestForFiresOnTimeWithoutAnotherReading(t *testing.T) {
	f := newFixture(t)
	expect(t, "first hot reading only pends", f.read("slow/x", `{"temp":35}`, t0), "pend")
	if next := f.tracker.Next(); !next.Equal(t0.Add(2 * time.Minute)) {
		t.Fatalf("timer at %v, want %v", next, t0.Add(2*time.Minute))
	}
	expect(t, "before for elapses", f.due(t0.Add(119*time.Second)), "")
	trs := f.due(t0.Add(2 * time.Minute))
	expect(t, "for elapsed", trs, "fire")
	if n := trs[0].Notification; !n.Since.Equal(t0) || n.Value.Text != "35" {
		t.Errorf("fire notification since %v value %q, want since the first breach and its value", n.Since, n.Value.Text)
	}
}

func TestForCancelledByANormalReading(t *testing.T) {
	f := newFixture(t)
	f.read("slow/x", `{"temp":35}`, t0)
	expect(t, "back to normal before for", f.read("slow/x", `{"temp":25}`, t0.Add(time.Minute)), "cancel")
	expect(t, "timer finds nothing to fire", f.due(t0.Add(time.Hour)), "")
	expect(t, "a new breach starts for over", f.read("slow/x", `{"temp":35}`, t0.Add(2*time.Hour)), "pend")
	expect(t, "a reading after for fires too", f.read("slow/x", `{"temp":36}`, t0.Add(2*time.Hour+2*time.Minute)), "fire")
}

func TestReminderAndResolvedThread(t *testing.T) {
	f := newFixture(t)
	trs := f.read("gh/a/t", `{"temp":31}`, t0)
	f.tracker.Mailed(trs[0], true, "first@alertd", "Hot", time.Time{})
	expect(t, "no reminder before repeat", f.due(t0.Add(4*time.Hour-time.Second)), "")
	trs = f.due(t0.Add(4 * time.Hour))
	expect(t, "reminder", trs, "remind")
	if !trs[0].Notification.Reminder || trs[0].Thread != "first@alertd" {
		t.Errorf("reminder %+v thread %q", trs[0].Notification, trs[0].Thread)
	}
	f.tracker.Mailed(trs[0], true, "second@alertd", "Hot again", time.Time{})
	expect(t, "next reminder", f.due(t0.Add(8*time.Hour)), "remind")
	trs = f.read("gh/a/t", `{"temp":20}`, t0.Add(9*time.Hour))
	expect(t, "resolve", trs, "resolve")
	if !trs[0].Notified || trs[0].Thread != "first@alertd" {
		t.Errorf("resolve notified=%v thread=%q, want true and the first mail", trs[0].Notified, trs[0].Thread)
	}
	expect(t, "no reminder once resolved", f.due(t0.Add(20*time.Hour)), "")
}

func TestHeldBackFirstMailIsRetriedWhenTheCooldownEnds(t *testing.T) {
	f := newFixture(t)
	trs := f.read("o/a", `{"temp":31}`, t0)
	f.tracker.Mailed(trs[0], false, "", "", t0.Add(10*time.Minute))
	trs = f.due(t0.Add(10 * time.Minute))
	expect(t, "retry", trs, "remind")
	if trs[0].Notification.Reminder {
		t.Error("a retried first mail must read as the first mail, not a reminder")
	}
}

func TestSilence(t *testing.T) {
	f := newFixture(t)
	expect(t, "a reading", f.read("q/dev1", `anything`, t0), "")
	expect(t, "quiet 9m59s", f.due(t0.Add(10*time.Minute-time.Second)), "")
	trs := f.due(t0.Add(10 * time.Minute))
	expect(t, "quiet 10m", trs, "fire")
	if n := trs[0].Notification; !n.Since.Equal(t0) || !n.LastSeen.Equal(t0) {
		t.Errorf("silence since %v last seen %v, want %v", n.Since, n.LastSeen, t0)
	}
	expect(t, "fires once", f.due(t0.Add(time.Hour)), "")
	expect(t, "reports again", f.read("q/dev1", `{"x":1}`, t0.Add(2*time.Hour)), "resolve")
	expect(t, "silent again 10m after its last reading", f.due(t0.Add(48*time.Hour)), "fire")
}

// Silence is paused per source: a device that mails its "I'm alive"
// through the SMTP ingress is still found silent while the MQTT broker is
// away, and the MQTT devices are not.
func TestSilencePausesOnlyForTheSourceThatIsAway(t *testing.T) {
	f := newFixture(t)
	f.readFrom("smtp", "q/nas", `x`, t0)
	f.readFrom("mqtt", "q/dev1", `x`, t0)
	f.tracker.Disconnected("mqtt")
	trs := f.due(t0.Add(time.Hour))
	expect(t, "the SMTP device, silent while MQTT is away", trs, "fire")
	if trs[0].Notification.Series != "q/nas" {
		t.Fatalf("fired for %s, want q/nas", trs[0].Notification.Series)
	}
	back := t0.Add(time.Hour)
	f.tracker.Connected("mqtt", back)
	expect(t, "the MQTT device counts from the reconnect", f.due(back.Add(9*time.Minute)), "")
	expect(t, "then fires", f.due(back.Add(10*time.Minute)), "fire")
}

func TestSilencePausesWhileDisconnected(t *testing.T) {
	f := newFixture(t)
	f.read("q/dev1", `x`, t0)
	f.read("q/dev2", `x`, t0.Add(5*time.Minute))
	f.tracker.Disconnected("mqtt")
	expect(t, "no silence while alertd is cut off", f.due(t0.Add(time.Hour)), "")
	back := t0.Add(time.Hour)
	f.tracker.Connected("mqtt", back)
	expect(t, "not right after reconnecting", f.due(back.Add(9*time.Minute)), "")
	f.read("q/dev2", `x`, back.Add(time.Minute)) // dev2 reports after the outage
	trs := f.due(back.Add(10 * time.Minute))
	expect(t, "only the device still quiet, silent_for after reconnecting", trs, "fire")
	if trs[0].Notification.Series != "q/dev1" {
		t.Errorf("fired for %s, want q/dev1", trs[0].Notification.Series)
	}
}

func TestChattyDeviceKeepsOneTimer(t *testing.T) {
	f := newFixture(t)
	for i := range 10000 {
		f.read("q/dev1", `x`, t0.Add(time.Duration(i)*time.Second))
	}
	if n := len(f.tracker.timers); n > 2 {
		t.Errorf("%d timer entries for one series", n)
	}
}

func TestAbortLetsTheRedeliveredReadingDecideAgain(t *testing.T) {
	f := newFixture(t)
	rd := f.engine.Evaluate(&event.Event{Topic: "gh/a/t", Payload: []byte(`{"temp":31}`), Received: t0}, nil)[0]
	tr, ok, err := f.tracker.Observe(&rd)
	if !ok || err != nil {
		t.Fatalf("observe: %v %v", ok, err)
	}
	f.tracker.Abort(tr) // persisting failed
	expect(t, "same reading redelivered", f.read("gh/a/t", `{"temp":31}`, t0), "fire")
}

// While a timer's transition is being saved, a reading of the same series
// waits (ErrBusy) instead of deciding a second, contradicting transition.
func TestTimerAndReadingDoNotRaceOnASeries(t *testing.T) {
	f := newFixture(t)
	f.read("slow/x", `{"temp":35}`, t0)
	trs := f.tracker.Due(t0.Add(2 * time.Minute)) // fire, not yet saved
	expect(t, "for elapsed", trs, "fire")
	rd := f.engine.Evaluate(&event.Event{Topic: "slow/x", Payload: []byte(`{"temp":20}`), Received: t0.Add(121 * time.Second)}, nil)[0]
	if _, _, err := f.tracker.Observe(&rd); !errors.Is(err, ErrBusy) {
		t.Fatalf("a reading during the save: %v, want ErrBusy", err)
	}
	f.tracker.Mailed(trs[0], true, "fire@alertd", "Hot", time.Time{})
	f.tracker.Settle(trs[0])
	tr, ok, err := f.tracker.Observe(&rd)
	if err != nil || !ok || tr.Kind != Resolve || !tr.Notified {
		t.Fatalf("after the save the reading resolves the mailed alert: %v %v %+v", ok, err, tr.Kind)
	}
}

func TestRestartRemembersFiringAndLastSeen(t *testing.T) {
	db, _, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f := newFixture(t)
	trs := f.read("gh/a/t", `{"temp":31}`, t0)
	put(t, db, trs[0].Record(true, "first@alertd", "Hot", time.Time{}))
	f.read("q/dev1", `x`, t0)
	if _, err := f.tracker.Checkpoint(context.Background(), db); err != nil {
		t.Fatal(err)
	}

	// Restart two hours later.
	later := t0.Add(2 * time.Hour)
	g := newFixture(t)
	g.tracker = New(Options{Start: later})
	n, err := g.tracker.Load(db, g.engine)
	if err != nil || n != 2 {
		t.Fatalf("loaded %d series, err %v; want 2", n, err)
	}
	expect(t, "still hot after restart: no second firing mail", g.read("gh/a/t", `{"temp":33}`, later), "")
	g.tracker.Disconnected("mqtt")
	g.tracker.Connected("mqtt", later)
	expect(t, "silence counts from the restart, not the last reading", g.due(later.Add(time.Minute)), "")
	expect(t, "then fires", g.due(later.Add(10*time.Minute)), "fire")
	trs = g.read("gh/a/t", `{"temp":20}`, later.Add(time.Hour))
	expect(t, "clears", trs, "resolve")
	if !trs[0].Notified || trs[0].Thread != "first@alertd" {
		t.Errorf("after restart the resolve lost its thread: notified=%v thread=%q", trs[0].Notified, trs[0].Thread)
	}
}

func put(t *testing.T, db *store.DB, s Series) {
	t.Helper()
	if err := db.Update(func(tx *store.Tx) error { return Put(tx, &s) }); err != nil {
		t.Fatal(err)
	}
}

// A breach that for: holds pending is kept: a restart (or the new owner
// of a partition) fires it when for: ends, since the first breaching
// reading, without another reading; a pending breach cancelled before is
// forgotten by the store too.
func TestRestartKeepsAPendingForAndForgetsACancelledOne(t *testing.T) {
	db, _, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f := newFixture(t)
	trs := f.read("slow/x", `{"temp":35}`, t0)
	expect(t, "x pends", trs, "pend")
	put(t, db, trs[0].Snapshot)
	trs = f.read("slow/y", `{"temp":36}`, t0)
	put(t, db, trs[0].Snapshot)
	trs = f.read("slow/y", `{"temp":20}`, t0.Add(30*time.Second))
	expect(t, "y back to normal", trs, "cancel")
	put(t, db, trs[0].Snapshot)

	later := t0.Add(time.Minute) // a crash and a restart within for: 2m
	g := newFixture(t)
	g.tracker = New(Options{Start: later})
	if n, err := g.tracker.Load(db, g.engine); err != nil || n != 1 {
		t.Fatalf("loaded %d series, err %v; want x's", n, err)
	}
	if next := g.tracker.Next(); !next.Equal(t0.Add(2 * time.Minute)) {
		t.Fatalf("timer at %v, want the first breach's for: end %v", next, t0.Add(2*time.Minute))
	}
	trs = g.due(t0.Add(2 * time.Minute))
	expect(t, "x fires on time", trs, "fire")
	if n := trs[0].Notification; !n.Since.Equal(t0) || n.Value.Text != "35" || n.Series != "slow/x" {
		t.Errorf("fired %s since %v value %q, want slow/x since the first breach, 35", n.Series, n.Since, n.Value.Text)
	}
	expect(t, "y stays quiet", g.due(t0.Add(time.Hour)), "")
}

// A pending breach whose for: ended while alertd was down does not fire
// at start: the readings queued meanwhile (a persistent session, the
// stream's backlog) arrive once the source is heard again, and may clear
// it. It waits for its source, then RestoreGrace; a reading decides at
// once. A series of a rule that is now a silence rule is not restored.
func TestAPendingBreachLoadedLateWaitsForItsSource(t *testing.T) {
	db, _, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f := newFixture(t)
	for _, topic := range []string{"slow/x", "slow/y"} {
		trs := f.read(topic, `{"temp":35}`, t0)
		put(t, db, trs[0].Snapshot)
	}

	later := t0.Add(time.Hour) // down for longer than for: 2m
	g := newFixture(t)
	g.tracker = New(Options{Start: later})
	g.tracker.Disconnected("mqtt")
	if n, err := g.tracker.Load(db, g.engine); err != nil || n != 2 {
		t.Fatalf("loaded %d series, err %v; want 2", n, err)
	}
	expect(t, "nothing fires while the source is away", g.due(later.Add(time.Minute)), "")
	back := later.Add(2 * time.Minute)
	g.tracker.Connected("mqtt", back)
	expect(t, "nor within the grace after it is back", g.due(back.Add(RestoreGrace-time.Millisecond)), "")
	expect(t, "the queued reading of x clears it", g.read("slow/x", `{"temp":20}`, back.Add(time.Second)), "cancel")
	trs := g.due(back.Add(RestoreGrace))
	expect(t, "y, not cleared, fires after the grace", trs, "fire")
	if n := trs[0].Notification; n.Series != "slow/y" || !n.Since.Equal(t0) {
		t.Errorf("fired %s since %v, want slow/y since the first breach", n.Series, n.Since)
	}

	h := newFixtureWith(t, strings.Replace(ruleset, "{name: slow, topic: \"slow/+\", field: temp, above: 30, for: 2m}", "{name: slow, topic: \"slow/+\", silent_for: 10m}", 1), Options{})
	h.tracker = New(Options{Start: later})
	if n, err := h.tracker.Load(db, h.engine); err != nil || n != 0 {
		t.Fatalf("a rule now a silence rule: loaded %d series (err %v), want none", n, err)
	}
}

// Only a first mail a silence held is released when silences are looked
// at again (a restart, a partition taken over, a silence removed): one
// the cooldown holds keeps its time, else each restart would count it
// held back once more.
func TestRetryHeldReleasesOnlyWhatASilenceHeld(t *testing.T) {
	f := newFixture(t)
	var trs []Transition
	for _, topic := range []string{"gh/a/t", "gh/b/t"} {
		for _, rd := range f.engine.Evaluate(&event.Event{Topic: topic, Payload: []byte(`{"temp":31}`), Received: t0}, nil) {
			tr, ok, err := f.tracker.Observe(&rd)
			if err != nil || !ok {
				t.Fatalf("observe %s: %v %v", topic, ok, err)
			}
			trs = append(trs, tr)
		}
	}
	until := t0.Add(time.Hour)
	for i, tr := range trs {
		f.tracker.Mailed(tr, false, "", "", until) // held back until then
		if i == 0 {
			f.tracker.HeldBySilence(tr) // a's by a silence, b's by the cooldown
		}
		f.tracker.Settle(tr)
	}
	f.tracker.RetryHeldIf(func(string, string) bool { return true }, t0.Add(time.Minute))
	got := f.due(t0.Add(time.Minute))
	if len(got) != 1 || got[0].Notification.Series != "gh/a/t" || got[0].Kind != Remind {
		t.Fatalf("released %v, want only gh/a/t's first mail (held by a silence)", kinds(got))
	}
}
