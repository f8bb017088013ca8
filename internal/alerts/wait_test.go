package alerts

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/event"
)

// A reading of a series whose timer transition is being saved waits for
// the save to end, then is decided on the saved state — no polling, no
// ErrBusy for the caller to retry.
func TestObserveWaitsForTheTransitionBeingSaved(t *testing.T) {
	f := newFixture(t)
	expect(t, "slow pends", f.read("slow/x", `{"temp":35}`, t0), "pend")
	trs := f.tracker.Due(t0.Add(2 * time.Minute)) // fire, not settled yet: the series is busy
	expect(t, "for elapsed", trs, "fire")

	rds := f.engine.Evaluate(&event.Event{Topic: "slow/x", Payload: []byte(`{"temp":10}`), Received: t0.Add(3 * time.Minute)}, nil)
	type result struct {
		tr  Transition
		ok  bool
		err error
	}
	done := make(chan result, 1)
	go func() {
		tr, ok, err := f.tracker.ObserveWait(context.Background(), &rds[0])
		done <- result{tr, ok, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("decided while the fire was still being saved: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	f.tracker.Settle(trs[0])
	r := <-done
	if r.err != nil || !r.ok || r.tr.Kind != Resolve {
		t.Fatalf("after the save: %v %v %v, want the reading to resolve the fired alert", r.tr.Kind, r.ok, r.err)
	}
	f.tracker.Settle(r.tr)

	// A context that ends first gives ErrBusy back.
	expect(t, "slow pends again", f.read("slow/y", `{"temp":35}`, t0), "pend")
	busy := f.tracker.Due(t0.Add(5 * time.Minute))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	rds = f.engine.Evaluate(&event.Event{Topic: "slow/y", Payload: []byte(`{"temp":10}`), Received: t0.Add(6 * time.Minute)}, nil)
	if _, _, err := f.tracker.ObserveWait(ctx, &rds[0]); !errors.Is(err, ErrBusy) {
		t.Fatalf("err %v, want ErrBusy when the context ends first", err)
	}
	for _, tr := range busy {
		f.tracker.Settle(tr)
	}
}
