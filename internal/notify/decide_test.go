package notify

import (
	"testing"
	"time"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/rules"
)

var t0 = time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)

func rule(name string, mod func(*rules.Rule)) *rules.Rule {
	r := &rules.Rule{Name: name, Cooldown: 10 * time.Minute, NotifyResolved: true,
		RateLimit: config.Rate{N: 2, Per: time.Hour}}
	if mod != nil {
		mod(r)
	}
	return r
}

// Each branch of the decision, from the facts alone.
func TestDecide(t *testing.T) {
	grouped := func(r *rules.Rule) { r.GroupWait = 30 * time.Second }
	quiet := func(r *rules.Rule) { r.NotifyResolved = false }
	recent := dedupe.Window{LastMail: t0.Add(-time.Minute), Held: 4}
	full := dedupe.Window{Sent: []int64{t0.Add(-50 * time.Minute).UnixNano(), t0.Add(-5 * time.Minute).UnixNano()}, Held: 1}
	for _, c := range []struct {
		name string
		f    Facts
		want Decision
	}{
		{"first mail", Facts{Kind: alerts.Fire, Rule: rule("hot", nil), Window: dedupe.Window{Held: 3}},
			Decision{Route: Outbox, Suppressed: 3}},
		{"silenced", Facts{Kind: alerts.Fire, Rule: rule("hot", nil), SilencedUntil: t0.Add(time.Hour)},
			Decision{Reason: Silenced, RetryAt: t0.Add(time.Hour)}},
		{"a silence comes before the cooldown", Facts{Kind: alerts.Remind, Rule: rule("hot", nil), SilencedUntil: t0.Add(time.Hour), Window: recent},
			Decision{Reason: Silenced, RetryAt: t0.Add(time.Hour)}},
		{"cooldown", Facts{Kind: alerts.Fire, Rule: rule("hot", nil), Window: recent},
			Decision{Reason: Cooldown, RetryAt: t0.Add(9 * time.Minute)}},
		{"cooldown over", Facts{Kind: alerts.Fire, Rule: rule("hot", nil), Window: dedupe.Window{LastMail: t0.Add(-10 * time.Minute), Held: 4}},
			Decision{Route: Outbox, Suppressed: 4}},
		{"rate limit: into the summary", Facts{Kind: alerts.Fire, Rule: rule("hot", nil), Window: full},
			Decision{Route: Summary, Reason: RateLimited, Reopens: t0.Add(10 * time.Minute)}},
		{"grouped: a line of the group mail", Facts{Kind: alerts.Fire, Rule: rule("hot", grouped), Window: full},
			Decision{Route: Group}},
		{"grouped lines still have a cooldown", Facts{Kind: alerts.Fire, Rule: rule("hot", grouped), Window: recent},
			Decision{Reason: Cooldown, RetryAt: t0.Add(9 * time.Minute)}},
		{"resolve of an announced alert", Facts{Kind: alerts.Resolve, Notified: true, Rule: rule("hot", nil), Window: recent, SilencedUntil: t0.Add(time.Hour)},
			Decision{Route: Outbox}},
		{"resolve into the group", Facts{Kind: alerts.Resolve, Notified: true, Rule: rule("hot", grouped)},
			Decision{Route: Group}},
		{"resolve of an unannounced alert", Facts{Kind: alerts.Resolve, Rule: rule("hot", nil)},
			Decision{Reason: Unannounced}},
		{"notify_resolved off", Facts{Kind: alerts.Resolve, Notified: true, Rule: rule("hot", quiet)},
			Decision{Reason: Quiet}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.f.Now = t0
			if got := Decide(c.f); !same(got, c.want) {
				t.Errorf("Decide = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestDecideGroupAndRelay(t *testing.T) {
	r := rule("hot", func(r *rules.Rule) { r.GroupWait = time.Minute })
	full := dedupe.Window{Sent: []int64{t0.Add(-50 * time.Minute).UnixNano(), t0.Add(-5 * time.Minute).UnixNano()}, Held: 2}
	if d := DecideGroup(r, full, t0); d.Route != Nowhere || d.Reason != RateLimited || !d.Reopens.Equal(t0.Add(10*time.Minute)) {
		t.Errorf("group mail over the rate limit: %+v", d)
	}
	if d := DecideGroup(r, full, t0.Add(11*time.Minute)); d.Route != Outbox || d.Suppressed != 2 {
		t.Errorf("group mail once the window reopened: %+v, want it out saying 2 held back", d)
	}
	c := dedupe.Candidate{Rule: relayRule + "10.0.0.7", Series: "same mail", Cooldown: 10 * time.Minute, Limit: 20, Per: time.Hour}
	if d := DecideRelay(c, dedupe.Window{LastMail: t0.Add(-time.Minute)}, t0); d.Reason != Cooldown || d.Route != Nowhere {
		t.Errorf("the same device mail again: %+v", d)
	}
	if d := DecideRelay(c, dedupe.Window{Held: 5}, t0); d.Route != Outbox || d.Suppressed != 5 {
		t.Errorf("a new device mail: %+v", d)
	}
}

func same(a, b Decision) bool {
	return a.Route == b.Route && a.Reason == b.Reason && a.RetryAt.Equal(b.RetryAt) &&
		a.Reopens.Equal(b.Reopens) && a.Suppressed == b.Suppressed
}
