package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/silence"
	"github.com/alertd/alertd/internal/store"
)

// pipeline is what every ingress hands its events to: rules, then the
// alert state machine, then the gate, then the outbox, all before the
// event is acknowledged.
type pipeline struct {
	engine   atomic.Pointer[rules.Engine] // swapped by a reload
	tracker  *alerts.Tracker
	silences *silence.Store
	gate     *dedupe.Gate
	outbox   *outbox.Outbox
	db       *store.DB
	from     string // header From
	envFrom  string // envelope sender (bare address)
	now      func() time.Time
	log      *slog.Logger
	m        *metrics.Metrics
	received map[string]prometheus.Counter // per source, looked up once

	// stateTopic and publish send each alert's state back to MQTT
	// (mqtt.state_topic); publish is nil when that is off.
	stateTopic string
	publish    func(topic string, payload []byte)

	groups *groups

	handled atomic.Uint64 // events fully processed (benchmarks, tests)
}

func newPipeline(a *App) *pipeline {
	p := &pipeline{
		tracker: a.tracker, silences: a.silences, gate: a.gate, groups: newGroups(), outbox: a.outbox, db: a.db,
		from: a.from, now: a.now, log: a.log, m: a.metrics,
		received: map[string]prometheus.Counter{"mqtt": a.metrics.MessagesReceived.WithLabelValues("mqtt")},
	}
	if addr, err := mail.ParseAddress(p.from); err == nil {
		p.envFrom = addr.Address
	}
	p.engine.Store(a.engine)
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
	if reason := unusableTopic(ev.Topic); reason != "" {
		// MQTT allows 64 KiB topics; a series key must fit bbolt and a
		// mail header. Such a message can never alert: drop it, counted,
		// rather than retry a write that can never succeed.
		p.m.MessagesDropped.WithLabelValues(reason).Inc()
		p.log.Debug("message dropped", "reason", reason, "topic", shortTopic(ev.Topic))
		p.handled.Add(1)
		return nil
	}
	var buf [4]rules.Reading
	for _, rd := range p.engine.Load().Evaluate(ev, buf[:0]) {
		if rd.Breach {
			p.m.RuleMatches.WithLabelValues(rd.Rule.Name).Inc()
		}
		tr, ok, err := p.observe(&rd)
		if errors.Is(err, alerts.ErrTooManySeries) {
			// Logged by the tracker's warning, once per rule per hour.
			p.m.MessagesDropped.WithLabelValues("too_many_series").Inc()
			continue
		}
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := p.apply(tr); err != nil {
			p.tracker.Abort(tr) // the redelivered message decides again
			return err
		}
		p.tracker.Settle(tr)
	}
	p.handled.Add(1)
	return nil
}

// observe applies a reading to its series, waiting while a transition of
// that series (a timer's) is being saved: milliseconds, bounded by
// busyWait in case the store hangs (the reading is then retried).
func (p *pipeline) observe(rd *rules.Reading) (alerts.Transition, bool, error) {
	tr, ok, err := p.tracker.Observe(rd)
	if !errors.Is(err, alerts.ErrBusy) {
		return tr, ok, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), busyWait)
	defer cancel()
	return p.tracker.ObserveWait(ctx, rd)
}

// busyWait bounds how long a reading waits for its series' transition.
const busyWait = 10 * time.Second

// MaxTopic bounds the topics alertd tracks: far above any device's, far
// below bbolt's 32 KiB key limit.
const MaxTopic = 1024

func unusableTopic(t string) string {
	switch {
	case len(t) > MaxTopic:
		return "topic_too_long"
	case !utf8.ValidString(t) || strings.ContainsAny(t, "\x00\r\n"):
		return "topic_invalid"
	}
	return ""
}

func shortTopic(t string) string {
	if len(t) > 80 {
		return strings.ToValidUTF8(t[:80], "?") + "…"
	}
	return t
}

// apply persists a transition and queues its mail, if it has one, then
// publishes the alert's new state.
func (p *pipeline) apply(tr alerts.Transition) error {
	if err := p.commit(tr); err != nil {
		return err
	}
	if p.publish != nil && tr.Kind != alerts.Remind {
		p.publishState(tr)
	}
	return nil
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

func (p *pipeline) publishState(tr alerts.Transition) {
	n := &tr.Notification
	b, err := json.Marshal(statePayload{
		Rule: n.Rule.Name, Series: n.Series, State: n.State, Value: n.Value.Text, Since: n.Since, At: n.At,
	})
	if err != nil {
		return
	}
	p.publish(p.stateTopic+"/"+n.Rule.Name+"/"+n.Series, b)
}

// commit persists a transition and queues its mail, if it has one, in one
// bbolt transaction.
func (p *pipeline) commit(tr alerts.Transition) error {
	n := &tr.Notification
	log := p.log.With("rule", n.Rule.Name, "series", n.Series, "transition", tr.Kind.String())
	msgID := mailer.NewMessageID(p.now(), p.from) // fixed before the tx, which may run twice
	if tr.Kind == alerts.Resolve {
		send := tr.Notified && n.Rule.NotifyResolved
		var entry outbox.Entry
		err := p.db.Batch(func(tx *store.Tx) error {
			rec := tr.Record(false, "", time.Time{})
			if err := alerts.Put(tx, &rec); err != nil {
				return err
			}
			if !send {
				return nil
			}
			return p.deliver(tx, n, 0, msgID, tr.Thread, &entry)
		})
		if err != nil {
			return fmt.Errorf("record resolved alert: %w", err)
		}
		if send {
			p.queued(log, n, &entry, 0)
		} else {
			log.Debug("alert resolved; its firing mail was not sent, so no resolved mail")
		}
		return nil
	}

	if until := p.silences.Silenced(n.Rule.Name, n.Series, p.now()); !until.IsZero() {
		// Silenced: the state moves on, the mail waits. A first mail still
		// due when the silence ends goes out then.
		if err := p.db.Batch(func(tx *store.Tx) error {
			rec := tr.Record(false, "", until)
			return alerts.Put(tx, &rec)
		}); err != nil {
			return fmt.Errorf("record alert state: %w", err)
		}
		p.tracker.Mailed(tr, false, "", until)
		p.m.Suppressed.WithLabelValues(n.Rule.Name, "silenced").Inc()
		log.Debug("notification silenced", "until", until)
		return nil
	}
	var entry outbox.Entry
	c := dedupe.Candidate{
		Rule: n.Rule.Name, Series: n.Series, Cooldown: n.Rule.Cooldown,
		Limit: n.Rule.RateLimit.N, Per: n.Rule.RateLimit.Per,
	}
	c.Member = n.Rule.GroupWait > 0 // the rate limit applies to the group mails
	v, err := p.gate.Admit(c, func(tx *store.Tx, suppressed uint64) error {
		rec := tr.Record(true, msgID, time.Time{})
		if err := alerts.Put(tx, &rec); err != nil {
			return err
		}
		return p.deliver(tx, n, suppressed, msgID, tr.Thread, &entry)
	})
	if err != nil {
		return err
	}
	if v.Admitted {
		p.tracker.Mailed(tr, true, msgID, time.Time{})
		p.queued(log, n, &entry, v.Suppressed)
		return nil
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
	if err := p.db.Batch(func(tx *store.Tx) error {
		rec := tr.Record(false, "", retry)
		if err := alerts.Put(tx, &rec); err != nil {
			return err
		}
		if summary {
			return putGroupItem(tx, n)
		}
		return nil
	}); err != nil {
		p.gate.Unhold(n.Rule.Name) // the redelivered reading will be counted again
		return fmt.Errorf("record alert state: %w", err)
	}
	if summary {
		p.groups.open(n.Rule.Name, v.RetryAt)
	}
	p.tracker.Mailed(tr, false, "", retry)
	p.m.Suppressed.WithLabelValues(n.Rule.Name, v.Reason).Inc()
	log.Debug("notification held back", "reason", v.Reason, "retry_at", v.RetryAt)
	return nil
}

// deliver writes n's mail inside tx: into the outbox, or for a grouped
// rule into its group, which one mail will list.
func (p *pipeline) deliver(tx *store.Tx, n *rules.Notification, suppressed uint64, msgID, thread string, entry *outbox.Entry) error {
	if n.Rule.GroupWait > 0 {
		return putGroupItem(tx, n)
	}
	e, err := p.entry(n, suppressed, msgID, thread)
	if err != nil {
		return err
	}
	err = outbox.Put(tx, e) // assigns e.ID
	*entry = *e
	return err
}

// queued reports a mail queued by deliver, once its transaction committed.
func (p *pipeline) queued(log *slog.Logger, n *rules.Notification, e *outbox.Entry, heldBefore uint64) {
	if n != nil && n.Rule.GroupWait > 0 {
		p.groups.open(n.Rule.Name, p.now().Add(n.Rule.GroupWait))
		log.Debug("notification waits for its group mail", "group_wait", n.Rule.GroupWait)
		return
	}
	p.m.MailQueued.Inc()
	p.outbox.Kick()
	log.Info("alert queued", "id", e.ID, "subject", e.Subject, "held_back_before", heldBefore)
}

// envelopeTo is the bare addresses of a rule's recipients.
func (p *pipeline) envelopeTo(r *rules.Rule) []string {
	rcpts := make([]string, 0, len(r.To))
	for _, to := range r.To {
		if a, err := mail.ParseAddress(to); err == nil {
			rcpts = append(rcpts, a.Address)
		}
	}
	return rcpts
}

// entry renders and composes the mail for n.
func (p *pipeline) entry(n *rules.Notification, suppressed uint64, msgID, thread string) (*outbox.Entry, error) {
	subject, body, err := n.Render(suppressed)
	if err != nil {
		// A template that parsed and dry-ran at load can still fail on
		// real data ({{index .Wildcards 3}}): send the alert anyway.
		subject = strings.Join(strings.Fields(fmt.Sprintf("[%s] %s: %s %s (template error)", n.Rule.Severity, n.Rule.Name, n.Series, n.State)), " ")
		body = fmt.Sprintf("The rule's template failed: %v\n\nData: %+v\n", err, n.Data(suppressed))
	}
	rcpts := p.envelopeTo(n.Rule)
	msg, err := mailer.Compose(mailer.Mail{
		From: p.from, To: n.Rule.To, Subject: subject, Body: body, Date: n.At, MessageID: msgID,
		InReplyTo: thread,
		Headers:   map[string]string{"X-Alertd-Rule": n.Rule.Name, "X-Alertd-State": n.State},
	})
	if err != nil {
		return nil, err
	}
	return &outbox.Entry{
		Rule: n.Rule.Name, Series: n.Series, From: p.envFrom, To: rcpts, Subject: subject,
		MessageID: msgID, Message: msg, Created: p.now(), Next: p.now(),
	}, nil
}

// runTimers fires what time alone decides: for: elapsed, reminders,
// held-back first mails, silent devices.
func (p *pipeline) runTimers(ctx context.Context) error {
	for {
		wait := time.Hour
		if next := p.tracker.Next(); !next.IsZero() {
			wait = max(next.Sub(p.now()), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-p.tracker.Wake():
		case <-t.C:
		}
		t.Stop()
		failed := false
		for _, tr := range p.tracker.Due(p.now()) {
			if failed {
				p.tracker.Abort(tr)
				continue
			}
			if err := p.apply(tr); err != nil {
				p.log.Error("alert timer", "rule", tr.Notification.Rule.Name, "series", tr.Notification.Series, "err", err)
				p.tracker.Abort(tr)
				failed = true
				continue
			}
			p.tracker.Settle(tr)
		}
		if failed { // the store is failing: do not spin on the same timers
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
}

// runCheckpoints saves silence rules' last-seen times that changed, every
// interval, in small transactions between which alerts are recorded.
func (p *pipeline) runCheckpoints(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil // Run saves the rest once readings have stopped
		case <-t.C:
			if _, err := p.tracker.Checkpoint(ctx, p.db); err != nil {
				p.log.Error("save last-seen times", "err", err)
			}
		}
	}
}

// lastSeenShutdownBudget bounds the last checkpoint: SIGTERM must end
// alertd within 10 s (Docker's default stop timeout), and stopping the
// subscriber and closing the store need the rest. A last-seen time not
// saved costs little: after a restart silence is counted from the
// reconnection; only a device first seen since the last checkpoint, and
// never again, goes unreported.
const lastSeenShutdownBudget = 5 * time.Second

// saveLastSeen is the checkpoint at shutdown.
func (p *pipeline) saveLastSeen() {
	start := time.Now()
	left, err := p.tracker.Flush(p.db, p.now().Add(lastSeenShutdownBudget))
	switch {
	case err != nil:
		p.log.Error("save last-seen times at shutdown", "err", err, "series_left", left)
	case left > 0:
		p.log.Warn("shutdown: last-seen times not all saved in time; a device among them first seen since the last checkpoint, "+
			"and never again, will not be reported silent", "series_left", left, "budget", lastSeenShutdownBudget)
	default:
		p.log.Debug("last-seen times saved", "took", time.Since(start))
	}
}

// seriesBudgets is each rule's max_series, by name.
func seriesBudgets(cfg *config.Config) map[string]int {
	b := make(map[string]int, len(cfg.Rules))
	for i := range cfg.Rules {
		b[cfg.Rules[i].Name] = cfg.Rules[i].MaxSeries
	}
	return b
}

// logSeriesLimit reports a rule meeting a series limit (at most once per
// rule per hour: a flood of junk topics must not flood the log too).
func logSeriesLimit(log *slog.Logger, w alerts.Warning) {
	msg := "series limit reached: the rule's new topics take the place of its ok silence series seen least recently " +
		"(seen once first), or are dropped when none can go; raise the limit if the topics are real devices"
	if w.AtLoad {
		msg = "series limit reached at start: the stored series over it were evicted, seen once and least recently first"
	}
	log.Warn(msg, "rule", w.Rule, "filter", w.Filter, "topic", shortTopic(w.Topic), "limit", w.Limit, "max", w.Max,
		"series", w.Series, "evicted", w.Evicted, "dropped", w.Dropped)
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
