package notify

import (
	"time"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/rules"
)

// This file is the one place that decides whether a mail goes out now,
// where it goes, and if not, why. Every decision is a pure function of the
// stored state the caller read and the clock; the caller commits the
// decision, the state it changes and the mail in one transaction. A
// notification's route is decided here and only here, which is where
// quiet hours, flap detection and escalation will hook in.

// Reason is why a mail does not go out now; "" when it does. The values
// are the reason label of alertd_notifications_suppressed_total.
type Reason string

// Reasons a mail is held back or not sent.
const (
	Silenced    Reason = "silenced"
	Cooldown    Reason = Reason(dedupe.ReasonCooldown)
	RateLimited Reason = Reason(dedupe.ReasonRateLimit)
	// Unannounced: a resolve of an alert whose firing mail never went out
	// (held back, silenced): nobody was told it fired.
	Unannounced Reason = "unannounced"
	// Quiet: a resolve of a rule with notify_resolved: false.
	Quiet Reason = "notify_resolved_off"
)

// Route is where a mail goes.
type Route uint8

// Routes.
const (
	// Nowhere: no mail now (see the Reason).
	Nowhere Route = iota
	// Outbox: a mail of its own, queued now.
	Outbox
	// Group: a line of the rule's group mail, sent when group_wait ends.
	Group
	// Summary: held by the rate limit, a line of the summary mailed when
	// the rule's rate window reopens, so nothing is dropped silently.
	Summary
)

// Decision is what becomes of one mail.
type Decision struct {
	Route  Route
	Reason Reason
	// RetryAt is, for a first mail held by a silence or the cooldown,
	// when it is tried again.
	RetryAt time.Time
	// Reopens is, for one held by the rate limit, when its window reopens.
	Reopens time.Time
	// Suppressed is, for a mail of its own, how many of the rule's mails
	// were held back since its last one (the mail says so).
	Suppressed uint64
}

// Sent reports whether the mail goes out (now or in its group mail).
func (d Decision) Sent() bool { return d.Route == Outbox || d.Route == Group }

// Facts are what a transition's decision is made from.
type Facts struct {
	Kind     alerts.Kind
	Notified bool // for a resolve: whether the firing mail went out
	Rule     *rules.Rule
	// SilencedUntil is when the silence covering the series ends; zero:
	// none does.
	SilencedUntil time.Time
	Window        dedupe.Window // what the gate stored for the series
	Now           time.Time
}

// Decide decides on a transition's mail.
//
// A resolve is mailed only if the firing mail went out and the rule wants
// resolves; it bypasses silences, the cooldown and the rate limit (the
// people told of the alert are told it ended). Otherwise a silence holds
// the mail until it ends, then the cooldown of the series, then the rate
// limit of the rule; a rule with group_wait sends its lines in a group
// mail, to which the rate limit applies instead.
func Decide(f Facts) Decision {
	route := Outbox
	if f.Rule.GroupWait > 0 {
		route = Group
	}
	if f.Kind == alerts.Resolve {
		switch {
		case !f.Notified:
			return Decision{Reason: Unannounced}
		case !f.Rule.NotifyResolved:
			return Decision{Reason: Quiet}
		}
		return Decision{Route: route}
	}
	if !f.SilencedUntil.IsZero() {
		return Decision{Reason: Silenced, RetryAt: f.SilencedUntil}
	}
	// The series is in the Window already; Check needs only the limits.
	switch why, at := dedupe.Check(candidate(f.Rule, ""), f.Window, f.Now); why {
	case dedupe.ReasonCooldown:
		return Decision{Reason: Cooldown, RetryAt: at}
	case dedupe.ReasonRateLimit:
		return Decision{Route: Summary, Reason: RateLimited, Reopens: at}
	}
	if route == Group {
		return Decision{Route: Group}
	}
	return Decision{Route: Outbox, Suppressed: f.Window.Held}
}

// Candidate is what the gate keeps for a rule's series. A grouped rule's
// lines are members: only the cooldown applies to them, and the rate
// limit to the group mails.
func Candidate(r *rules.Rule, series string) dedupe.Candidate { return candidate(r, series) }

func candidate(r *rules.Rule, series string) dedupe.Candidate {
	return dedupe.Candidate{
		Rule: r.Name, Series: series, Cooldown: r.Cooldown,
		Limit: r.RateLimit.N, Per: r.RateLimit.Per, Member: r.GroupWait > 0,
	}
}

// groupCandidate is what the gate keeps for a rule's group and summary
// mails.
func groupCandidate(r *rules.Rule) dedupe.Candidate {
	return dedupe.Candidate{Rule: r.Name, Series: "\x00group", Limit: r.RateLimit.N, Per: r.RateLimit.Per}
}

// DecideGroup decides on a group or summary mail: only the rule's rate
// limit applies.
func DecideGroup(r *rules.Rule, w dedupe.Window, now time.Time) Decision {
	if why, at := dedupe.Check(groupCandidate(r), w, now); why != "" {
		return Decision{Reason: Reason(why), Reopens: at}
	}
	return Decision{Route: Outbox, Suppressed: w.Held}
}

// DecideRelay decides on a mail a device asked alertd to relay: the same
// mail again within the cooldown is held back, and a client over its rate
// limit waits for its window.
func DecideRelay(c dedupe.Candidate, w dedupe.Window, now time.Time) Decision {
	switch why, at := dedupe.Check(c, w, now); why {
	case dedupe.ReasonCooldown:
		return Decision{Reason: Cooldown, RetryAt: at}
	case dedupe.ReasonRateLimit:
		return Decision{Reason: RateLimited, Reopens: at}
	}
	return Decision{Route: Outbox, Suppressed: w.Held}
}
