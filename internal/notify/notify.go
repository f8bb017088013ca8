// Package notify is the stage between an alert's transition and its mail:
// the one place that decides whether a transition's mail goes out now, and
// if not, why (silenced, cooldown, rate limit, grouped), and that commits
// the decision, the series' new state and the rendered mail in one store
// transaction. Group and summary mails are sent from here when their
// window closes, and each alert's state is published back to MQTT when
// mqtt.state_topic is set. It is given transitions by the engine and
// writes to the outbox; it calls back into neither.
package notify

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/silence"
	"github.com/alertd/alertd/internal/store"
)

// Notifier commits transitions and their mails. Safe for concurrent use.
type Notifier struct {
	db       *store.DB
	gate     *dedupe.Gate
	silences *silence.Store
	outbox   *outbox.Outbox
	from     string // header From
	envFrom  string // envelope sender (bare address)
	now      func() time.Time
	log      *slog.Logger
	Metrics  *metrics.Metrics
	rule     func(name string) *rules.Rule // the rules in force (a reload swaps them)
	groups   *groups

	// StateTopic and Publish send each alert's state back to MQTT
	// (mqtt.state_topic); Publish is nil when that is off. Set before use.
	StateTopic string
	Publish    func(topic string, payload []byte)
	// OnQuarantine hears of each group item that could not be read.
	OnQuarantine func(store.Quarantined)
}

// Options are what a Notifier is built from.
type Options struct {
	DB       *store.DB
	Gate     *dedupe.Gate
	Silences *silence.Store
	Outbox   *outbox.Outbox
	From     string // "Name <addr>", the mails' From
	Now      func() time.Time
	Log      *slog.Logger
	Metrics  *metrics.Metrics
	Rule     func(name string) *rules.Rule
}

// New returns a Notifier.
func New(o Options) *Notifier {
	nf := &Notifier{db: o.DB, gate: o.Gate, silences: o.Silences, outbox: o.Outbox, from: o.From, now: o.Now,
		log: o.Log, Metrics: o.Metrics, rule: o.Rule, groups: newGroups()}
	if addr, err := mail.ParseAddress(o.From); err == nil {
		nf.envFrom = addr.Address
	}
	return nf
}

// EnvelopeFrom is the bare address the mails are sent from.
func (nf *Notifier) EnvelopeFrom() string { return nf.envFrom }

// Outcome is what became of a transition's mail, for the live series:
// when Mailed, the engine records that the mail was queued (Sent, with
// Thread its Message-ID) or held back until RetryAt.
type Outcome struct {
	Mailed  bool
	Sent    bool
	Thread  string
	RetryAt time.Time
}

// Commit persists a transition and queues its mail, if it may go out now,
// in one transaction, then publishes the alert's new state. The Outcome
// says what became of the mail, for the engine to apply to the live
// series; an error means nothing was committed.
func (nf *Notifier) Commit(tr alerts.Transition) (Outcome, error) {
	out, err := nf.commit(tr)
	if err != nil {
		return Outcome{}, err
	}
	if nf.Publish != nil && tr.Kind != alerts.Remind {
		nf.publishState(tr)
	}
	return out, nil
}

// statePayload is what mqtt.state_topic carries for one series.
type statePayload struct {
	Rule   string    `json:"rule"`
	Series string    `json:"series"`
	State  string    `json:"state"`
	Value  string    `json:"value,omitempty"`
	Since  time.Time `json:"since,omitzero"`
	At     time.Time `json:"at"`
}

func (nf *Notifier) publishState(tr alerts.Transition) {
	n := &tr.Notification
	b, err := json.Marshal(statePayload{
		Rule: n.Rule.Name, Series: n.Series, State: n.State, Value: n.Value.Text, Since: n.Since, At: n.At,
	})
	if err != nil {
		return
	}
	nf.Publish(nf.StateTopic+"/"+n.Rule.Name+"/"+n.Series, b)
}

// commit persists a transition and queues its mail, if it has one, in one
// bbolt transaction.
func (nf *Notifier) commit(tr alerts.Transition) (out Outcome, err error) {
	n := &tr.Notification
	log := nf.log.With("rule", n.Rule.Name, "series", n.Series, "transition", tr.Kind.String())
	msgID := mailer.NewMessageID(nf.now(), nf.from) // fixed before the tx, which may run twice
	if tr.Kind == alerts.Resolve {
		send := tr.Notified && n.Rule.NotifyResolved
		var entry outbox.Entry
		err := nf.db.Batch(func(tx *store.Tx) error {
			rec := tr.Record(false, "", time.Time{})
			if err := alerts.Put(tx, &rec); err != nil {
				return err
			}
			if !send {
				return nil
			}
			return nf.deliver(tx, n, 0, msgID, tr.Thread, &entry)
		})
		if err != nil {
			return out, fmt.Errorf("record resolved alert: %w", err)
		}
		if send {
			nf.queued(log, n, &entry, 0)
		} else {
			log.Debug("alert resolved; its firing mail was not sent, so no resolved mail")
		}
		return out, nil
	}

	if until := nf.silences.Silenced(n.Rule.Name, n.Series, nf.now()); !until.IsZero() {
		// Silenced: the state moves on, the mail waits. A first mail still
		// due when the silence ends goes out then.
		if err := nf.db.Batch(func(tx *store.Tx) error {
			rec := tr.Record(false, "", until)
			return alerts.Put(tx, &rec)
		}); err != nil {
			return out, fmt.Errorf("record alert state: %w", err)
		}
		out = Outcome{Mailed: true, RetryAt: until}
		nf.Metrics.Suppressed.WithLabelValues(n.Rule.Name, "silenced").Inc()
		log.Debug("notification silenced", "until", until)
		return out, nil
	}
	var entry outbox.Entry
	c := dedupe.Candidate{
		Rule: n.Rule.Name, Series: n.Series, Cooldown: n.Rule.Cooldown,
		Limit: n.Rule.RateLimit.N, Per: n.Rule.RateLimit.Per,
	}
	c.Member = n.Rule.GroupWait > 0 // the rate limit applies to the group mails
	v, err := nf.gate.Admit(c, func(tx *store.Tx, suppressed uint64) error {
		rec := tr.Record(true, msgID, time.Time{})
		if err := alerts.Put(tx, &rec); err != nil {
			return err
		}
		return nf.deliver(tx, n, suppressed, msgID, tr.Thread, &entry)
	})
	if err != nil {
		return out, err
	}
	if v.Admitted {
		out = Outcome{Mailed: true, Sent: true, Thread: msgID}
		nf.queued(log, n, &entry, v.Suppressed)
		return out, nil
	}
	// Held back: the series is firing all the same, and must stay so
	// after a restart. Held by the cooldown, its first mail is retried when
	// the cooldown ends; held by the rate limit, it is listed in a summary
	// mailed when the rule's window reopens, so nothing is dropped silently.
	retry := v.RetryAt
	summary := v.Reason == dedupe.ReasonRateLimit && n.Rule.GroupWait == 0
	if summary {
		retry = time.Time{}
	}
	if err := nf.db.Batch(func(tx *store.Tx) error {
		rec := tr.Record(false, "", retry)
		if err := alerts.Put(tx, &rec); err != nil {
			return err
		}
		if summary {
			return putGroupItem(tx, n)
		}
		return nil
	}); err != nil {
		nf.gate.Unhold(n.Rule.Name) // the redelivered reading will be counted again
		return out, fmt.Errorf("record alert state: %w", err)
	}
	if summary {
		nf.groups.open(n.Rule.Name, v.RetryAt)
	}
	out = Outcome{Mailed: true, RetryAt: retry}
	nf.Metrics.Suppressed.WithLabelValues(n.Rule.Name, v.Reason).Inc()
	log.Debug("notification held back", "reason", v.Reason, "retry_at", v.RetryAt)
	return out, nil
}

// deliver writes n's mail inside tx: into the outbox, or for a grouped
// rule into its group, which one mail will list.
func (nf *Notifier) deliver(tx *store.Tx, n *rules.Notification, suppressed uint64, msgID, thread string, entry *outbox.Entry) error {
	if n.Rule.GroupWait > 0 {
		return putGroupItem(tx, n)
	}
	e, err := nf.entry(n, suppressed, msgID, thread)
	if err != nil {
		return err
	}
	err = outbox.Put(tx, e) // assigns e.ID
	*entry = *e
	return err
}

// queued reports a mail queued by deliver, once its transaction committed.
func (nf *Notifier) queued(log *slog.Logger, n *rules.Notification, e *outbox.Entry, heldBefore uint64) {
	if n != nil && n.Rule.GroupWait > 0 {
		nf.groups.open(n.Rule.Name, nf.now().Add(n.Rule.GroupWait))
		log.Debug("notification waits for its group mail", "group_wait", n.Rule.GroupWait)
		return
	}
	nf.Metrics.MailQueued.Inc()
	nf.outbox.Kick()
	log.Info("alert queued", "id", e.ID, "subject", e.Subject, "held_back_before", heldBefore)
}

// envelopeTo is the bare addresses of a rule's recipients.
func (nf *Notifier) envelopeTo(r *rules.Rule) []string {
	rcpts := make([]string, 0, len(r.To))
	for _, to := range r.To {
		if a, err := mail.ParseAddress(to); err == nil {
			rcpts = append(rcpts, a.Address)
		}
	}
	return rcpts
}

// entry renders and composes the mail for n.
func (nf *Notifier) entry(n *rules.Notification, suppressed uint64, msgID, thread string) (*outbox.Entry, error) {
	subject, body, err := n.Render(suppressed)
	if err != nil {
		// A template that parsed and dry-ran at load can still fail on
		// real data ({{index .Wildcards 3}}): send the alert anyway.
		subject = strings.Join(strings.Fields(fmt.Sprintf("[%s] %s: %s %s (template error)", n.Rule.Severity, n.Rule.Name, n.Series, n.State)), " ")
		body = fmt.Sprintf("The rule's template failed: %v\n\nData: %+v\n", err, n.Data(suppressed))
	}
	rcpts := nf.envelopeTo(n.Rule)
	msg, err := mailer.Compose(mailer.Mail{
		From: nf.from, To: n.Rule.To, Subject: subject, Body: body, Date: n.At, MessageID: msgID,
		InReplyTo: thread,
		Headers:   map[string]string{"X-Alertd-Rule": n.Rule.Name, "X-Alertd-State": n.State},
	})
	if err != nil {
		return nil, err
	}
	return &outbox.Entry{
		Rule: n.Rule.Name, Series: n.Series, From: nf.envFrom, To: rcpts, Subject: subject,
		MessageID: msgID, Message: msg, Created: nf.now(), Next: nf.now(),
	}, nil
}
