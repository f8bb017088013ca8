package app

import (
	"fmt"
	"log/slog"
	"net/mail"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
)

// pipeline is what every ingress hands its events to: rules, then the
// gate, then the outbox, all before the event is acknowledged.
type pipeline struct {
	engine   *rules.Engine
	gate     *dedupe.Gate
	outbox   *outbox.Outbox
	from     string // header From
	envFrom  string // envelope sender (bare address)
	now      func() time.Time
	log      *slog.Logger
	m        *metrics.Metrics
	received map[string]prometheus.Counter // per source, looked up once
}

func newPipeline(a *App) *pipeline {
	p := &pipeline{
		engine: a.engine, gate: a.gate, outbox: a.outbox, from: a.from, now: a.now, log: a.log, m: a.metrics,
		received: map[string]prometheus.Counter{"mqtt": a.metrics.MessagesReceived.WithLabelValues("mqtt")},
	}
	if addr, err := mail.ParseAddress(p.from); err == nil {
		p.envFrom = addr.Address
	}
	return p
}

// Handle implements subscriber.Handler. An error means the event's alerts
// may not be in the outbox, so the ingress must not acknowledge it.
func (p *pipeline) Handle(ev *event.Event) error {
	if c := p.received[ev.Source]; c != nil {
		c.Inc()
	} else {
		p.m.MessagesReceived.WithLabelValues(ev.Source).Inc()
	}
	var buf [4]rules.Notification
	for _, n := range p.engine.Evaluate(ev, buf[:0]) {
		p.m.RuleMatches.WithLabelValues(n.Rule.Name).Inc()
		if err := p.notify(&n); err != nil {
			return err
		}
	}
	return nil
}

func (p *pipeline) notify(n *rules.Notification) error {
	now := p.now()
	msgID := mailer.NewMessageID(now, p.from) // fixed before the tx, which may run twice
	var entry outbox.Entry
	v, err := p.gate.Admit(dedupe.Candidate{
		Rule: n.Rule.Name, Series: n.Series, Cooldown: n.Rule.Cooldown,
		Limit: n.Rule.RateLimit.N, Per: n.Rule.RateLimit.Per,
	}, func(tx *bolt.Tx, suppressed uint64) error {
		e, err := p.entry(n, suppressed, now, msgID)
		if err != nil {
			return err
		}
		entry = *e
		return outbox.Put(tx, e)
	})
	if err != nil {
		return err
	}
	log := p.log.With("rule", n.Rule.Name, "series", n.Series)
	if !v.Admitted {
		p.m.Suppressed.WithLabelValues(n.Rule.Name, v.Reason).Inc()
		log.Debug("notification held back", "reason", v.Reason)
		return nil
	}
	p.m.MailQueued.Inc()
	p.outbox.Kick()
	log.Info("alert queued", "id", entry.ID, "subject", entry.Subject, "held_back_before", v.Suppressed)
	return nil
}

// entry renders and composes the mail for n.
func (p *pipeline) entry(n *rules.Notification, suppressed uint64, now time.Time, msgID string) (*outbox.Entry, error) {
	subject, body, err := n.Render(suppressed)
	if err != nil {
		// A template that parsed and dry-ran at load can still fail on
		// real data ({{index .Wildcards 3}}): send the alert anyway.
		subject = fmt.Sprintf("[%s] %s: %s (template error)", n.Rule.Severity, n.Rule.Name, n.Series)
		body = fmt.Sprintf("The rule's template failed: %v\n\nData: %+v\n", err, n.Data(suppressed))
	}
	rcpts := make([]string, 0, len(n.Rule.To))
	for _, to := range n.Rule.To {
		if a, err := mail.ParseAddress(to); err == nil {
			rcpts = append(rcpts, a.Address)
		}
	}
	msg, err := mailer.Compose(mailer.Mail{
		From: p.from, To: n.Rule.To, Subject: subject, Body: body, Date: now, MessageID: msgID,
		Headers: map[string]string{"X-Alertd-Rule": n.Rule.Name},
	})
	if err != nil {
		return nil, err
	}
	return &outbox.Entry{
		Rule: n.Rule.Name, Series: n.Series, From: p.envFrom, To: rcpts, Subject: subject,
		MessageID: msgID, Message: msg, Created: now, Next: now,
	}, nil
}

// invalidPayloads counts and logs payloads a rule could not use.
type invalidPayloads struct {
	m   *metrics.Metrics
	log *slog.Logger
}

func (o invalidPayloads) InvalidPayload(rule, topic string, err error) {
	o.m.PayloadInvalid.WithLabelValues(rule).Inc()
	o.log.Debug("payload not usable by rule", "rule", rule, "topic", topic, "reason", err)
}
