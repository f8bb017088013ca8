package alerts

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/event"
)

// Quick handling (ObserveQuiet first, Observe only when it declines) must
// be indistinguishable from Observe on every reading: the same
// transitions, in the same order, and the same series afterwards, for
// thresholds with hysteresis, for:, silence rules and timers.
func TestObserveQuietChangesNothingObserveWouldNot(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	a, b := newFixture(t), newFixture(t)
	topics := []string{"gh/1/t", "gh/2/t", "slow/1", "slow/2", "q/1", "q/2", "o/1"}
	at := t0
	quick := 0
	for i := range 4000 {
		at = at.Add(time.Duration(rng.IntN(90)) * time.Second)
		topic := topics[rng.IntN(len(topics))]
		temp := []float64{20, 29.5, 31, 35}[rng.IntN(4)]
		payload := fmt.Sprintf(`{"temp": %g}`, temp)
		switch rng.IntN(8) {
		case 0: // bytes that are not UTF-8, kept sanitized
			payload = fmt.Sprintf(`{"temp": %g, "tag": "\xff"}`, temp)
		case 1:
			payload = fmt.Sprintf(`{"temp": %g, "n": %d}`, temp, rng.IntN(3))
		}
		if i%400 == 399 { // time alone: for:, reminders, silence
			expectSame(t, i, a.due(at), b.due(at))
			continue
		}
		want := a.read(topic, payload, at)
		ev := &event.Event{Topic: topic, Payload: []byte(payload), Received: at}
		var got []Transition
		if b.tracker.ObserveQuiet(b.engine.Readings(ev, nil)) {
			quick++
		} else {
			got = b.read(topic, payload, at)
		}
		expectSame(t, i, want, got)
		for _, rule := range []string{"hot", "slow", "quiet", "once"} {
			sa, _ := a.tracker.Lookup(rule, topic)
			sb, _ := b.tracker.Lookup(rule, topic)
			if sa.Value != sb.Value || sa.Payload != sb.Payload || !sa.LastSeen.Equal(sb.LastSeen) {
				t.Fatalf("step %d: %s %s: Observe left value %q payload %q seen %v, quick handling %q %q %v",
					i, rule, topic, sa.Value.Text, sa.Payload, sa.LastSeen, sb.Value.Text, sb.Payload, sb.LastSeen)
			}
		}
	}
	for _, topic := range topics {
		for _, rule := range []string{"hot", "slow", "quiet", "once"} {
			sa, oka := a.tracker.Lookup(rule, topic)
			sb, okb := b.tracker.Lookup(rule, topic)
			if oka != okb || sa.State != sb.State || !sa.LastSeen.Equal(sb.LastSeen) || !sa.Since.Equal(sb.Since) || sa.Value != sb.Value {
				t.Errorf("%s %s: Observe left %v %+v, quick handling %v %+v", rule, topic, oka, sa, okb, sb)
			}
		}
	}
	if quick < 1000 {
		t.Errorf("only %d of 4000 readings were quiet: the test exercises little", quick)
	}
}

func expectSame(t *testing.T, i int, want, got []Transition) {
	t.Helper()
	if kinds(want) != kinds(got) {
		t.Fatalf("step %d: Observe made %q, quick handling %q", i, kinds(want), kinds(got))
	}
	for j := range want {
		wn, gn := &want[j].Notification, &got[j].Notification
		if wn.Value != gn.Value || wn.Payload != gn.Payload {
			t.Fatalf("step %d: transition %d of %s carries value %q payload %q, quick handling %q %q", i, j, wn.Series, wn.Value.Text, wn.Payload, gn.Value.Text, gn.Payload)
		}
		if want[j].Notification.Series != got[j].Notification.Series || want[j].Notification.Rule.Name != got[j].Notification.Rule.Name {
			t.Fatalf("step %d: transition %d is %s/%s, quick handling %s/%s", i, j,
				want[j].Notification.Rule.Name, want[j].Notification.Series, got[j].Notification.Rule.Name, got[j].Notification.Series)
		}
	}
}
