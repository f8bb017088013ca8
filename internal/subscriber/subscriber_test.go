package subscriber

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/mqtttest"
)

// recorder is a narrow seam in place of the pipeline: it counts what each payload was handled with.
type recorder struct {
	mu       sync.Mutex
	tries    map[string]int
	accepted map[string]int
	failFor  func(payload string, try int) bool
}

func (r *recorder) Handle(ev *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := string(ev.Payload)
	r.tries[p]++
	if r.failFor(p, r.tries[p]) {
		return errors.New("store unavailable")
	}
	r.accepted[p]++
	return nil
}

func (r *recorder) count(m map[string]int, p string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return m[p]
}

func run(t *testing.T, url, clientID string, h Handler) (stop func()) {
	t.Helper()
	s := New(Options{Broker: url, ClientID: clientID, QoS: 1, Filters: []string{"s/#"}}, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for !s.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("subscriber not ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() { cancel(); <-done }
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A message whose alerts could not be stored is retried, and acknowledged
// only once they are: the broker does not deliver it again afterwards.
func TestAckOnlyAfterTheHandlerSucceeds(t *testing.T) {
	broker := mqtttest.Start(t)
	id := fmt.Sprintf("alertd-sub-%d", time.Now().UnixNano())
	rec := &recorder{tries: map[string]int{}, accepted: map[string]int{}, failFor: func(p string, try int) bool { return try <= 3 }}
	stop := run(t, broker.URL(), id, rec)
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "s/a", "m1")
	waitFor(t, "m1 handled after 3 failures", func() bool { return rec.count(rec.accepted, "m1") == 1 })
	stop()

	// Same session again: m1 was acknowledged, so it does not come back.
	stop = run(t, broker.URL(), id, rec)
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "s/a", "m2")
	waitFor(t, "m2 handled", func() bool { return rec.count(rec.accepted, "m2") == 1 })
	stop()
	if n := rec.count(rec.tries, "m1"); n != 4 {
		t.Errorf("m1 handled %d times, want 4 (3 failures, 1 success, no redelivery)", n)
	}
}

// A message still failing when alertd stops is not acknowledged: the
// broker delivers it to the next session, so the reading is not lost.
func TestUnstoredMessageComesBackAfterRestart(t *testing.T) {
	broker := mqtttest.Start(t)
	id := fmt.Sprintf("alertd-sub-%d", time.Now().UnixNano())
	var broken sync.Mutex
	failing := true
	rec := &recorder{tries: map[string]int{}, accepted: map[string]int{}, failFor: func(string, int) bool {
		broken.Lock()
		defer broken.Unlock()
		return failing
	}}
	stop := run(t, broker.URL(), id, rec)
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "s/a", "m1")
	waitFor(t, "m1 tried", func() bool { return rec.count(rec.tries, "m1") >= 2 })
	stop()
	if rec.count(rec.accepted, "m1") != 0 {
		t.Fatal("m1 must not have been accepted")
	}
	broken.Lock()
	failing = false
	broken.Unlock()
	stop = run(t, broker.URL(), id, rec)
	defer stop()
	waitFor(t, "m1 redelivered and handled", func() bool { return rec.count(rec.accepted, "m1") == 1 })
}

// After an outage of the broker, alertd is subscribed again within a
// second or so of the broker's return, however many outages came before:
// paho's reconnect backoff would otherwise grow across outages that follow
// each other, leaving alertd blind for many seconds after each.
func TestBackWithinSecondsOfEachBrokerReturn(t *testing.T) {
	broker := mqtttest.Start(t)
	id := fmt.Sprintf("alertd-sub-%d", time.Now().UnixNano())
	rec := &recorder{tries: map[string]int{}, accepted: map[string]int{}, failFor: func(string, int) bool { return false }}
	s := New(Options{Broker: broker.URL(), ClientID: id, QoS: 1, Filters: []string{"s/#"}}, rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "first subscription", s.Ready)
	for i := range 5 {
		broker.Outage(2 * time.Second)
		back := time.Now()
		for !s.Ready() {
			if time.Since(back) > 2*time.Second {
				t.Fatalf("outage %d: not subscribed again 2 s after the broker returned", i+1)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("outage %d: subscribed again %v after the broker returned", i+1, time.Since(back).Round(time.Millisecond))
		p := fmt.Sprintf("after-outage-%d", i+1)
		mqtttest.NewPublisher(t, broker.URL()).Publish(t, "s/a", p)
		waitFor(t, p+" handled", func() bool { return rec.count(rec.accepted, p) == 1 })
	}
}

// A reload changes the filters on the live connection: the broker sends
// what the new rules want and stops sending what no rule wants any more,
// with no reconnect.
func TestSetFiltersFollowsTheRulesWithoutReconnecting(t *testing.T) {
	broker := mqtttest.Start(t)
	rec := &recorder{tries: map[string]int{}, accepted: map[string]int{}, failFor: func(string, int) bool { return false }}
	var connects sync.Map
	s := New(Options{Broker: broker.URL(), ClientID: fmt.Sprintf("alertd-sub-%d", time.Now().UnixNano()), QoS: 1,
		Filters: []string{"s/#"}, Connected: func(up bool) { connects.Store(time.Now(), up) }}, rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "subscribed", s.Ready)

	if err := s.SetFilters([]string{"garden/+/state"}); err != nil {
		t.Fatal(err)
	}
	pub := mqtttest.NewPublisher(t, broker.URL())
	pub.Publish(t, "s/a", "old-filter")
	pub.Publish(t, "garden/pump/state", "new-filter")
	waitFor(t, "the new filter's message", func() bool { return rec.count(rec.accepted, "new-filter") == 1 })
	pub.Publish(t, "garden/pump/state", "marker")
	waitFor(t, "a later message", func() bool { return rec.count(rec.accepted, "marker") == 1 })
	if n := rec.count(rec.tries, "old-filter"); n != 0 {
		t.Errorf("a message of the dropped filter was delivered %d times", n)
	}
	n := 0
	connects.Range(func(_, _ any) bool { n++; return true })
	if n != 1 {
		t.Errorf("%d connection changes, want the first connect only", n)
	}
}

// The session is persistent, so the broker keeps an earlier run's
// subscriptions: a filter the rules no longer have is unsubscribed at the
// first connect (its readings stop arriving), and Held reports what the
// broker holds now, for the next start.
func TestStaleFiltersOfAnEarlierRunAreUnsubscribed(t *testing.T) {
	broker := mqtttest.Start(t)
	id := fmt.Sprintf("alertd-sub-%d", time.Now().UnixNano())
	rec := &recorder{tries: map[string]int{}, accepted: map[string]int{}, failFor: func(string, int) bool { return false }}
	start := func(filters, stale []string, held func([]string)) func() {
		s := New(Options{Broker: broker.URL(), ClientID: id, QoS: 1, Filters: filters, Stale: stale, Held: held}, rec)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = s.Run(ctx); close(done) }()
		waitFor(t, "subscribed", s.Ready)
		return func() { cancel(); <-done }
	}
	stop := start([]string{"s/#", "old/#"}, nil, nil)
	stop()

	var mu sync.Mutex
	var held []string
	stop = start([]string{"s/#"}, []string{"old/#"}, func(fs []string) { mu.Lock(); held = fs; mu.Unlock() })
	defer stop()
	pub := mqtttest.NewPublisher(t, broker.URL())
	pub.Publish(t, "old/a", "stale")
	pub.Publish(t, "s/a", "wanted")
	waitFor(t, "the wanted reading", func() bool { return rec.count(rec.accepted, "wanted") == 1 })
	time.Sleep(200 * time.Millisecond) // the stale one, if still subscribed, came before it on the same session
	if n := rec.count(rec.tries, "stale"); n != 0 {
		t.Errorf("a reading on a filter the rules dropped arrived %d times", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(held) != "[s/#]" {
		t.Errorf("Held reported %v, want [s/#]", held)
	}
}
