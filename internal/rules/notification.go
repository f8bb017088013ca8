package rules

import (
	"strings"
	"time"

	"github.com/alertd/alertd/internal/topic"
)

// States a notification reports, as templates and metrics see them.
const (
	StateFiring   = "firing"
	StateResolved = "resolved"
)

// Notification is one mail-worthy moment of one series: it fired, it is
// still firing (a reminder), or it resolved. It is what the gate decides
// on and what the mail is rendered from.
type Notification struct {
	Rule *Rule
	// Series is the concrete topic: one rule on one topic is one series,
	// the unit of alert state and of the cooldown.
	Series   string
	State    string // StateFiring or StateResolved
	Reminder bool
	// Since is when the problem began: the first breaching reading (before
	// any for:), or for a silence the last reading seen.
	Since time.Time
	At    time.Time // when this transition happened
	// The last reading of the series.
	Value    Value
	Payload  string
	LastSeen time.Time
}

// Firing returns the notification for r firing on reading rd at once.
func (rd *Reading) Firing() Notification {
	return Notification{
		Rule: rd.Rule, Series: rd.Event.Topic, State: StateFiring,
		Since: rd.Event.Received, At: rd.Event.Received,
		Value: rd.Value.Short(), Payload: ShownPayload(rd.Event.Payload), LastSeen: rd.Event.Received,
	}
}

// describeTopic returns the levels name's wildcards matched and the device:
// the level matched by the filter's first '+', or the whole topic.
func describeTopic(filter, name string) (wild []string, device string) {
	wild, _ = topic.Wildcards(filter, name)
	if len(wild) > 0 && strings.Contains(filter, "+") {
		return wild, wild[0]
	}
	return wild, name
}

// Data returns the template data with the given suppressed count.
func (n *Notification) Data(suppressed uint64) Data {
	r := n.Rule
	wild, device := describeTopic(r.Filter, n.Series)
	d := Data{
		Rule: r.Name, Topic: n.Series, Device: device, Wildcards: wild,
		Field: r.Field, Value: n.Value.Text, Number: n.Value.Num, Threshold: r.cond.threshold(n.Value),
		Severity: r.Severity, Payload: n.Payload, Time: Time{r.in(n.At)},
		State: n.State, Reminder: n.Reminder, Silent: r.Silence(),
		Since: Time{r.in(n.Since)}, LastSeen: Time{r.in(n.LastSeen)},
		Duration:   roundDuration(n.At.Sub(n.Since)),
		Suppressed: suppressed,
	}
	switch {
	case r.Silence():
		d.Threshold = r.SilentFor.String()
	case r.when != nil:
		d.Threshold = r.when.src
	}
	return d
}

// roundDuration prints a duration the way a person would say it.
func roundDuration(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
	case d >= time.Hour:
		d = d.Round(time.Minute)
	default:
		d = d.Round(time.Second)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	return s
}

// Render produces the mail's subject (one clean line) and body.
func (n *Notification) Render(suppressed uint64) (subject, body string, err error) {
	d := n.Data(suppressed)
	if subject, err = render(n.Rule.tmpl.subject, &d, maxBody); err != nil {
		return "", "", err
	}
	if body, err = render(n.Rule.tmpl.body, &d, maxBody); err != nil {
		return "", "", err
	}
	if n.State == StateResolved && !n.Rule.tmpl.subjectHasState {
		// A custom subject written for the firing mail must not make the
		// recovery look like a new alert.
		subject = "[resolved] " + subject
	}
	return cleanSubject(subject), strings.ToValidUTF8(body, "\uFFFD"), nil
}

// InZone shows t in the rule's time zone (timezone:, else the host's).
func (r *Rule) InZone(t time.Time) time.Time { return r.in(t) }

// in shows t in the rule's time zone (timezone:, else the host's).
func (r *Rule) in(t time.Time) time.Time {
	if r.Location == nil || t.IsZero() {
		return t
	}
	return t.In(r.Location)
}

// ThreadsSubject reports whether an episode's later mails take its first
// mail's subject ("Re: ..."): with thread: true, unless the rule's own
// subject shows the state, which its author wants to read in the inbox.
func (r *Rule) ThreadsSubject() bool { return r.Thread && !r.tmpl.ownStateSubject }
