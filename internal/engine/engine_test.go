package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/notify"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/silence"
	"github.com/alertd/alertd/internal/store"
)

var t0 = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

// three rules that one greenhouse reading breaches together, and a
// silence rule for the timer tests.
const greenhouse = `rules:
  - {name: warm, topic: "gh/+/t", field: temp, above: 30, to: [ops@example.org]}
  - {name: hot, topic: "gh/+/t", field: temp, above: 35, to: [ops@example.org]}
  - {name: dry, topic: "gh/+/t", field: hum, below: 20, to: [ops@example.org]}
  - {name: quiet, topic: "q/+/t", silent_for: 10m, to: [ops@example.org]}
`

// committer is the real notify stage with a seam in front: it counts
// the calls and their sizes, and can be told to fail.
type committer struct {
	next  Committer
	mu    sync.Mutex
	sizes []int
	fail  atomic.Int32  // fail this many calls more
	failN atomic.Int32  // when > 0, the call of that number (from 1) fails
	gate  chan struct{} // when set, each call waits for a receive
	calls atomic.Int32  // calls begun
	err   error         // what a failing call returns
}

func (c *committer) CommitAll(trs []alerts.Transition) ([]notify.Outcome, error) {
	call := c.calls.Add(1)
	c.mu.Lock()
	c.sizes = append(c.sizes, len(trs))
	c.mu.Unlock()
	if c.fail.Load() > 0 {
		c.fail.Add(-1)
		return nil, c.err
	}
	if call == c.failN.Load() {
		return nil, c.err
	}
	return c.next.CommitAll(trs)
}

func (c *committer) callSizes() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.sizes...)
}

type fixture struct {
	eng     *Engine
	tracker *alerts.Tracker
	ob      *outbox.Outbox
	commit  *committer
	mu      sync.Mutex
	now     time.Time
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) setNow(t time.Time) {
	f.mu.Lock()
	f.now = t
	f.mu.Unlock()
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	cfg, err := config.Load(strings.NewReader(greenhouse), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Compile(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	db, _, err := store.Open(filepath.Join(t.TempDir(), "alertd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{now: t0, ob: outbox.New(db)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sil, err := silence.Open(db, t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	nf := notify.New(notify.Options{DB: db, Gate: dedupe.New(db, f.clock), Silences: sil, Outbox: f.ob,
		From: "alertd <alerts@example.org>", Now: f.clock, Log: log, Metrics: m, Rule: rs.Rule})
	f.tracker = alerts.New(alerts.Options{Start: t0})
	f.commit = &committer{next: nf, err: errors.New("disk full")}
	f.eng = New(Options{Rules: rs, Tracker: f.tracker, Commit: f.commit, DB: db, Now: f.clock, Log: log, Metrics: m})
	return f
}

func reading(topic, payload string, at time.Time) *event.Event {
	return &event.Event{Source: "mqtt", Topic: topic, Payload: []byte(payload), Received: at}
}

// queued is the subjects of the mails in the outbox, in order.
func (f *fixture) queued(t *testing.T) []string {
	t.Helper()
	p, _, err := f.ob.Due(t0.Add(24*time.Hour), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, e := range p {
		s = append(s, e.Subject)
	}
	return s
}

func (f *fixture) state(rule, topic string) alerts.State {
	s, ok := f.tracker.Lookup(rule, topic)
	if !ok {
		return alerts.OK
	}
	return s.State
}

// One reading that breaches three rules is one commit of three
// transitions (one wait for the disk, not three), and each rule mails.
func TestAReadingsTransitionsAreCommittedTogether(t *testing.T) {
	f := newFixture(t)
	if err := f.eng.Handle(reading("gh/a/t", `{"temp": 38, "hum": 12}`, t0)); err != nil {
		t.Fatal(err)
	}
	if got := f.commit.callSizes(); len(got) != 1 || got[0] != 3 {
		t.Fatalf("commits %v, want one of 3 transitions", got)
	}
	if q := f.queued(t); len(q) != 3 {
		t.Fatalf("mails queued %q, want one per rule", q)
	}
	for _, r := range []string{"warm", "hot", "dry"} {
		if st := f.state(r, "gh/a/t"); st != alerts.Firing {
			t.Errorf("%s is %v, want firing", r, st)
		}
	}
}

// When the commit fails, none of the reading's transitions happened: no
// series is firing and nothing is queued, so the redelivered reading
// decides again and mails each rule once.
func TestAFailedCommitUndoesEveryTransitionOfTheReading(t *testing.T) {
	f := newFixture(t)
	f.commit.fail.Store(1)
	ev := reading("gh/a/t", `{"temp": 38, "hum": 12}`, t0)
	if err := f.eng.Handle(ev); err == nil {
		t.Fatal("Handle succeeded on a failing store")
	}
	for _, r := range []string{"warm", "hot", "dry"} {
		if st := f.state(r, "gh/a/t"); st != alerts.OK {
			t.Errorf("after the failed commit %s is %v, want ok", r, st)
		}
	}
	if q := f.queued(t); len(q) != 0 {
		t.Fatalf("mails queued after a failed commit: %q", q)
	}
	if err := f.eng.Handle(ev); err != nil {
		t.Fatal(err)
	}
	if q := f.queued(t); len(q) != 3 {
		t.Fatalf("after the redelivery %d mails queued (%q), want 3", len(q), q)
	}
}

// With MaxCommit (a replicated store), a reading's transitions are
// committed in chunks. When a later chunk fails, the earlier ones stay
// committed and the rest are undone; the redelivered reading commits only
// the rest, and every rule mails once.
func TestAReadingsTransitionsAreCommittedInChunks(t *testing.T) {
	f := newFixture(t)
	f.eng.maxCommit = 2
	f.commit.failN.Store(2)
	ev := reading("gh/a/t", `{"temp": 38, "hum": 12}`, t0)
	if err := f.eng.Handle(ev); err == nil {
		t.Fatal("Handle succeeded with its second chunk failing")
	}
	firing := 0
	for _, r := range []string{"warm", "hot", "dry"} {
		if f.state(r, "gh/a/t") == alerts.Firing {
			firing++
		}
	}
	if q := f.queued(t); firing != 2 || len(q) != 2 {
		t.Fatalf("after the failed second chunk: %d firing, mails %q; want the first chunk's 2", firing, q)
	}
	if err := f.eng.Handle(ev); err != nil {
		t.Fatal(err)
	}
	if got := f.commit.callSizes(); len(got) != 3 || got[0] != 2 || got[1] != 1 || got[2] != 1 {
		t.Fatalf("commits %v, want [2 1 1]: two chunks, then the redelivery's one transition", got)
	}
	if q := f.queued(t); len(q) != 3 {
		t.Fatalf("after the redelivery %d mails queued (%q), want 3", len(q), q)
	}
}

// A fleet gone silent at once is committed in batches of timerBatch, and
// every device is firing (mailed, or in the rate limit's summary).
func TestTimersDueTogetherAreCommittedInBatches(t *testing.T) {
	f := newFixture(t)
	const devices = 150
	for i := range devices {
		if err := f.eng.Handle(reading(fmt.Sprintf("q/%03d/t", i), `{}`, t0)); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.commit.callSizes(); len(got) != 0 {
		t.Fatalf("live signs committed %v: they change nothing to save", got)
	}
	f.setNow(t0.Add(11 * time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.eng.RunTimers(ctx) }()
	firing := func() int {
		n := 0
		for i := range devices {
			if f.state("quiet", fmt.Sprintf("q/%03d/t", i)) == alerts.Firing {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for firing() < devices && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := firing(); n != devices {
		t.Fatalf("%d devices reported silent, want %d", n, devices)
	}
	sizes := f.commit.callSizes()
	total := 0
	for _, n := range sizes {
		if n > timerBatch {
			t.Errorf("a commit of %d transitions, more than %d", n, timerBatch)
		}
		total += n
	}
	if total != devices || len(sizes) >= devices {
		t.Errorf("commits %v: want %d transitions in fewer than %d commits", sizes, devices, devices)
	}
}
