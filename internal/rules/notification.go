package rules

import (
	"strings"

	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/topic"
)

// Notification is a rule that matched one reading: what the gate decides
// on and what the mail is rendered from.
type Notification struct {
	Rule *Rule
	// Series is the concrete topic: one rule on one topic is one series,
	// the unit of the cooldown.
	Series string
	data   Data
}

func newNotification(r *Rule, ev *event.Event, v Value) Notification {
	wild, device := describeTopic(r.Filter, ev.Topic)
	return Notification{
		Rule:   r,
		Series: ev.Topic,
		data: Data{
			Rule: r.Name, Topic: ev.Topic, Device: device, Wildcards: wild,
			Field: r.Field, Value: v.Text, Number: v.Num, Threshold: r.cond.threshold(v),
			Severity: r.Severity, Payload: shownPayload(ev.Payload), Time: Time{ev.Received},
		},
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
	d := n.data
	d.Suppressed = suppressed
	return d
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
	return cleanSubject(subject), body, nil
}
