package app

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/notify"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

// pipeline is what every ingress hands its events to: rules, then the
// alert state machine, then the gate, then the outbox, all before the
// event is acknowledged.
type pipeline struct {
	engine   atomic.Pointer[rules.Engine] // swapped by a reload
	tracker  *alerts.Tracker
	notify   *notify.Notifier
	db       *store.DB
	now      func() time.Time
	log      *slog.Logger
	m        *metrics.Metrics
	received map[string]prometheus.Counter // per source, looked up once

	handled atomic.Uint64 // events fully processed (benchmarks, tests)
}

func newPipeline(a *App) *pipeline {
	p := &pipeline{
		tracker: a.tracker, db: a.db, now: a.now, log: a.log, m: a.metrics,
		received: map[string]prometheus.Counter{"mqtt": a.metrics.MessagesReceived.WithLabelValues("mqtt")},
	}
	p.engine.Store(a.engine)
	p.notify = notify.New(notify.Options{
		DB: a.db, Gate: a.gate, Silences: a.silences, Outbox: a.outbox, From: a.from, Now: a.now,
		Log: a.log, Metrics: a.metrics, Rule: func(name string) *rules.Rule { return p.engine.Load().Rule(name) },
	})
	p.notify.OnQuarantine = a.reportQuarantine
	return p
}

// apply hands a transition to the notify stage and applies what became
// of its mail to the live series.
func (p *pipeline) apply(tr alerts.Transition) error {
	out, err := p.notify.Commit(tr)
	if err != nil {
		return err
	}
	if out.Mailed {
		p.tracker.Mailed(tr, out.Sent, out.Thread, out.RetryAt)
	}
	return nil
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
