// Package dryrun shows what alertd would do with readings, without a
// broker, a store or the network. Each reading goes through the code run
// uses — the compiled rules (rules.Engine.Evaluate), the alert state
// machine (alerts.Tracker, on the readings' own times), the notify
// decision (notify.Decide, the gate's cooldown and rate window followed in
// memory as the store would hold them) and the mail (notify.ComposeMail) —
// and what each step decided is written in plain words, with the exact
// mail that would be queued. Timers (for:, repeat:, silent_for:, a first
// mail held back by the cooldown) fire between readings when their time
// comes. Silences live in the store, so nothing is silenced here.
package dryrun

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/notify"
	"github.com/alertd/alertd/internal/rules"
)

// Event is one reading to try: a topic and payload at a time.
type Event struct {
	At      time.Time
	Topic   string
	Payload []byte
}

// Options configure a dry run.
type Options struct {
	From   string        // the mails' From (smtp.from, or the spool's sender)
	Footer notify.Footer // what the mails end with
	Raw    bool          // print mails as queued (MIME, quoted-printable), not decoded
}

// Run tries events, in order, against cfg's rules and writes what happens
// to w. It returns an error only when the rules do not compile.
func Run(cfg *config.Config, events []Event, o Options, w io.Writer) error {
	r := &run{w: w, o: o, lastMail: map[[2]string]time.Time{}, ruleWindow: map[string]dedupe.Window{}}
	var err error
	if r.eng, err = rules.Compile(cfg, r); err != nil {
		return err
	}
	start := time.Now()
	if len(events) > 0 {
		start = events[0].At
	}
	r.tracker = alerts.New(alerts.Options{Start: start, MaxSeries: cfg.Limits.MaxSeries, Now: func() time.Time { return r.now }})
	for _, ev := range events {
		r.timers(ev.At)
		r.reading(ev)
	}
	r.summary()
	return nil
}

type run struct {
	w       io.Writer
	o       Options
	eng     *rules.Engine
	tracker *alerts.Tracker
	now     time.Time

	// The gate's state, as the store would hold it: each series' last
	// mail, and each rule's send times and held-back count.
	lastMail   map[[2]string]time.Time
	ruleWindow map[string]dedupe.Window

	subject string           // of the last mail printed
	invalid map[string]error // rule → why it could not use this reading's payload
	seen    [][2]string      // series touched, in order, for the summary
}

// InvalidPayload records, for the reading being tried, a rule that could
// not use its payload (rules.Observer).
func (r *run) InvalidPayload(rule, _ string, err error) { r.invalid[rule] = err }

func (r *run) printf(format string, args ...any) { fmt.Fprintf(r.w, format, args...) }

// reading tries one reading against every rule.
func (r *run) reading(ev Event) {
	r.now = ev.At
	r.printf("\n%s  %s  %s\n", stamp(ev.At), ev.Topic, shown(ev.Payload))
	e := event.Event{Source: "mqtt", Topic: ev.Topic, Payload: ev.Payload, Received: ev.At}
	r.invalid = map[string]error{}
	readings := r.eng.Evaluate(&e, nil)
	var idle []string
	for _, rule := range r.eng.Rules() {
		i := slices.IndexFunc(readings, func(rd rules.Reading) bool { return rd.Rule == rule })
		switch {
		case i >= 0:
			r.printf("  rule %q (topic %s) matches\n", rule.Name, rule.Filter)
			r.verdict(&readings[i])
			r.observe(&readings[i])
		case r.invalid[rule.Name] != nil:
			r.printf("  rule %q (topic %s) matches\n", rule.Name, rule.Filter)
			why, _, _ := strings.Cut(r.invalid[rule.Name].Error(), "\n") // an expression's error draws a caret below
			r.printf("    cannot use the payload: %s%s; the reading is ignored for this rule\n", why, fieldNote(rule))
		default:
			idle = append(idle, fmt.Sprintf("%s (%s)", rule.Name, rule.Filter))
		}
	}
	if len(readings) == 0 && len(r.invalid) == 0 {
		r.printf("  no rule watches this topic; the rules watch %s\n", strings.Join(idle, ", "))
		return
	}
	if len(idle) > 0 {
		r.printf("  not watching this topic: %s\n", strings.Join(idle, ", "))
	}
}

func fieldNote(rule *rules.Rule) string {
	if rule.Field == "" {
		return ""
	}
	return " (field " + rule.Field + ")"
}

// verdict says what the rule read and whether its condition holds.
func (r *run) verdict(rd *rules.Reading) {
	rule := rd.Rule
	cond := rule.Condition()
	switch {
	case rule.Silence():
		r.printf("    %s: a reading, so the topic is alive\n", cond)
		return
	case strings.HasPrefix(cond, "when: "):
		r.printf("    %s → %t\n", cond, rd.Breach)
		return
	}
	what := "the payload"
	if rule.Field != "" {
		what = rule.Field
	}
	r.printf("    value: %s = %s\n", what, rd.Value.Text)
	switch {
	case rd.Breach:
		r.printf("    condition: %s → holds\n", cond)
	case rd.Clear:
		r.printf("    condition: %s → does not hold\n", cond)
	default:
		r.printf("    condition: %s → does not hold, but a firing alert %s (hysteresis)\n", cond, rule.Clears())
	}
}

// observe applies a reading to its series and settles what it causes.
func (r *run) observe(rd *rules.Reading) {
	k := [2]string{rd.Rule.Name, rd.Event.Topic}
	if !slices.Contains(r.seen, k) {
		r.seen = append(r.seen, k)
	}
	before, _ := r.tracker.Lookup(k[0], k[1])
	tr, ok, err := r.tracker.Observe(rd)
	if err != nil {
		r.printf("    alert: %v\n", err)
		return
	}
	if ok {
		r.transition(tr, before.State)
		return
	}
	after, _ := r.tracker.Lookup(k[0], k[1])
	switch {
	case after.State == alerts.Pending:
		r.printf("    alert: pending since %s: fires at %s if it still holds then\n", stamp(after.Since), stamp(after.Since.Add(rd.Rule.For)))
	case after.State == alerts.Firing:
		r.printf("    alert: still firing (since %s); no new mail\n", stamp(after.Since))
	case !rd.Rule.Silence():
		r.printf("    alert: ok\n")
	}
}

// transition decides on a transition's mail, as the notify stage does,
// follows the gate's state, prints the mail, and settles it.
func (r *run) transition(tr alerts.Transition, from alerts.State) {
	n := &tr.Notification
	switch tr.Kind {
	case alerts.Pend:
		r.printf("    alert: ok → pending: fires at %s if it still holds then (for %s)\n", stamp(n.Since.Add(n.Rule.For)), human(n.Rule.For))
		r.tracker.Settle(tr)
		return
	case alerts.Cancel:
		r.printf("    alert: pending → ok: it stopped holding before for %s ran out; no mail\n", human(n.Rule.For))
		r.tracker.Settle(tr)
		return
	case alerts.Fire:
		r.printf("    alert: %s → firing\n", from)
	case alerts.Resolve:
		r.printf("    alert: firing → ok (resolved after %s)\n", human(n.At.Sub(n.Since)))
	case alerts.Remind:
		if n.Reminder {
			r.printf("    alert: still firing: a reminder (repeat %s)\n", human(n.Rule.Repeat))
		} else {
			r.printf("    alert: still firing: the first mail, held back before, is tried again\n")
		}
	}
	d := r.decide(tr)
	msgID := mailer.NewMessageID(r.now, r.o.From)
	r.subject = ""
	r.mail(tr, d, msgID)
	if tr.Kind != alerts.Resolve {
		r.tracker.Mailed(tr, d.Sent(), msgID, r.subject, d.RetryAt)
	}
	r.tracker.Settle(tr)
}

// decide is notify's decision on what the gate holds, and what the
// notify stage's commit then stores at the gate: a mail that goes out
// passes it; one held by the cooldown or the rate limit counts as held
// back; a resolve leaves it alone.
func (r *run) decide(tr alerts.Transition) notify.Decision {
	n := &tr.Notification
	c := notify.Candidate(n.Rule, n.Series)
	k := [2]string{n.Rule.Name, n.Series}
	w := r.ruleWindow[n.Rule.Name]
	w.LastMail = r.lastMail[k]
	d := notify.Decide(notify.Facts{Kind: tr.Kind, Notified: tr.Notified, Rule: n.Rule, Window: w, Now: r.now})
	if tr.Kind == alerts.Resolve {
		return d
	}
	switch {
	case d.Route == notify.Outbox || d.Route == notify.Group:
		w = w.Passed(c, r.now)
	case d.Route == notify.Summary || d.Reason == notify.Cooldown:
		w = w.HeldBack()
	}
	r.lastMail[k] = w.LastMail
	w.LastMail = time.Time{}
	r.ruleWindow[n.Rule.Name] = w
	return d
}

// mail says what becomes of the transition's mail and prints it when it
// goes out.
func (r *run) mail(tr alerts.Transition, d notify.Decision, msgID string) {
	n := &tr.Notification
	switch {
	case d.Route == notify.Outbox:
		note := ""
		if d.Suppressed > 0 {
			note = fmt.Sprintf(" (it says %d mail(s) of this rule were held back since its last one)", d.Suppressed)
		}
		r.printf("    mail: queued now%s:\n", note)
		subject, msg, err := notify.ComposeMail(r.o.From, r.o.Footer, n, d.Suppressed, msgID, tr.Thread, tr.ThreadSubject)
		r.subject = subject
		if err != nil {
			r.printf("    mail: cannot be composed: %v\n", err)
			return
		}
		r.printMail(msg)
	case d.Route == notify.Group:
		r.printf("    mail: a line of the rule's group mail, sent when group_wait (%s) ends\n", human(n.Rule.GroupWait))
	case d.Route == notify.Summary:
		r.printf("    mail: held back by the rate limit (%s); listed in the summary mail when the window reopens at %s\n", n.Rule.RateLimit, stamp(d.Reopens))
	case d.Reason == notify.Cooldown:
		r.printf("    mail: held back by the cooldown (%s) of this series until %s; tried again then if still firing\n", human(n.Rule.Cooldown), stamp(d.RetryAt))
	case d.Reason == notify.Unannounced:
		r.printf("    mail: none: its firing mail never went out, so nobody is told it resolved\n")
	case d.Reason == notify.Quiet:
		r.printf("    mail: none (notify_resolved: false)\n")
	default:
		r.printf("    mail: none (%s)\n", d.Reason)
	}
}

// timers fires what time alone decides, up to until.
func (r *run) timers(until time.Time) {
	for range 100_000 { // a bound, in case a timer were to come due at once again
		next := r.tracker.Next()
		if next.IsZero() || next.After(until) {
			return
		}
		r.now = next
		for _, tr := range r.tracker.Due(next) {
			n := &tr.Notification
			r.printf("\n%s  (no reading)  rule %q on %s: %s\n", stamp(next), n.Rule.Name, n.Series, timerCause(tr))
			from := alerts.Pending
			if n.Rule.Silence() || tr.Kind == alerts.Remind {
				from = alerts.OK
			}
			r.transition(tr, from)
		}
	}
}

func timerCause(tr alerts.Transition) string {
	n := &tr.Notification
	switch {
	case tr.Kind == alerts.Fire && n.Rule.Silence():
		return fmt.Sprintf("nothing heard since %s (silent_for %s)", stamp(n.LastSeen), human(n.Rule.SilentFor))
	case tr.Kind == alerts.Fire:
		return fmt.Sprintf("the condition held for %s (for)", human(n.Rule.For))
	case n.Reminder:
		return fmt.Sprintf("still firing after repeat %s", human(n.Rule.Repeat))
	}
	return "the cooldown that held back the first mail is over"
}

// summary says where each series stands after the last reading, and what
// would happen next if nothing more arrived.
func (r *run) summary() {
	var lines []string
	for _, k := range r.seen {
		s, ok := r.tracker.Lookup(k[0], k[1])
		if !ok {
			continue
		}
		rule := s.Rule
		var l string
		switch {
		case s.State == alerts.Pending:
			l = fmt.Sprintf("pending since %s: fires at %s if it still holds then", stamp(s.Since), stamp(s.Since.Add(rule.For)))
		case s.State == alerts.Firing && !s.Notified && !s.RetryAt.IsZero():
			l = fmt.Sprintf("firing since %s; its first mail, held back, is tried again at %s", stamp(s.Since), stamp(s.RetryAt))
		case s.State == alerts.Firing && rule.Repeat > 0 && s.Notified:
			l = fmt.Sprintf("firing since %s: a reminder at %s", stamp(s.Since), stamp(s.LastMail.Add(rule.Repeat)))
		case s.State == alerts.Firing:
			l = fmt.Sprintf("firing since %s", stamp(s.Since))
		case rule.Silence():
			l = fmt.Sprintf("ok: reported silent at %s if nothing arrives before", stamp(s.LastSeen.Add(rule.SilentFor)))
		default:
			continue
		}
		lines = append(lines, fmt.Sprintf("  rule %q on %s: %s", k[0], k[1], l))
	}
	if len(lines) == 0 {
		return
	}
	r.printf("\nafter the last reading:\n%s\n", strings.Join(lines, "\n"))
}

// human prints a duration as a person writes it: 2m, 1h30m, 90s.
func human(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// stamp prints a time as the mails do.
func stamp(t time.Time) string { return t.Format("2006-01-02 15:04:05 MST") }

// shown is a payload on one line, cut if long.
func shown(p []byte) string {
	s := strings.Join(strings.Fields(rules.ShownPayload(p)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
