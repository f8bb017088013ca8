package alerts

import (
	"testing"
	"time"
)

// Active lists what a status page shows: series firing and pending, newest
// first, and forgets a series once it resolves or its for: is cancelled.
func TestActiveListsFiringAndPendingUntilTheyClear(t *testing.T) {
	f := newFixture(t)
	f.read("q/door", `x`, t0)                              // a silence series, ok: not listed
	f.read("gh/a/t", `{"temp":31}`, t0.Add(time.Second))   // fires
	f.read("slow/x", `{"temp":35}`, t0.Add(2*time.Second)) // pends for 2m
	f.read("gh/b/t", `{"temp":20}`, t0.Add(3*time.Second)) // normal: nothing
	f.read("gh/c/t", `{"temp":33}`, t0.Add(-time.Minute))  // fired earlier
	active := f.tracker.Active()
	got := ""
	for _, s := range active {
		got += s.Rule.Name + " " + s.Topic + " " + s.State.String() + " " + s.Value.Text + "; "
	}
	if want := "slow slow/x pending 35; hot gh/a/t firing 31; hot gh/c/t firing 33; "; got != want {
		t.Fatalf("active %q, want %q", got, want)
	}
	if !active[1].Since.Equal(t0.Add(time.Second)) {
		t.Errorf("since %v, want the first breaching reading", active[1].Since)
	}

	f.read("gh/a/t", `{"temp":20}`, t0.Add(4*time.Second)) // resolves
	f.read("slow/x", `{"temp":20}`, t0.Add(5*time.Second)) // for: cancelled
	active = f.tracker.Active()
	if len(active) != 1 || active[0].Topic != "gh/c/t" {
		t.Fatalf("after recovery: %+v, want only gh/c/t", active)
	}
}
