// Package engine is alertd's middle stage: it turns each event a source
// hands it into readings (the rules) and transitions (the alert state
// machine), hands each transition to the next stage, and ends it there:
// settled when committed, undone when not, so the source does not
// acknowledge what was not saved. Timers (for:, repeat:, held-back first
// mails, silent_for:) and the checkpoints of last-seen times run here too.
// It knows nothing of MQTT, SMTP or HTTP, and nothing of mail.
package engine

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/notify"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

// Engine is what every source hands its events to: the rules, then the
// alert state machine, then the notify stage, all before the event is
// acknowledged. It also runs what time alone decides (for:, repeat:,
// silent_for:) and saves silence rules' last-seen times.
type Engine struct {
	rules     atomic.Pointer[rules.Engine] // swapped by a reload
	tracker   *alerts.Tracker
	commit    Committer
	db        *store.DB
	now       func() time.Time
	log       *slog.Logger
	m         *metrics.Metrics
	maxCommit int                           // Options.MaxCommit
	received  map[string]prometheus.Counter // per source, looked up once
	matches   sync.Map                      // rule name → its alertd_rule_matches_total, looked up once

	handled atomic.Uint64 // events fully processed (benchmarks, tests)
}

// Committer is the stage after the engine: it commits transitions and
// their mails in one transaction (all or none), and says what became of
// each mail, in order.
type Committer interface {
	CommitAll(trs []alerts.Transition) ([]notify.Outcome, error)
}

// Options are what an Engine is built from.
type Options struct {
	Rules   *rules.Engine
	Tracker *alerts.Tracker
	Commit  Committer
	DB      *store.DB // where checkpoints write
	Now     func() time.Time
	Log     *slog.Logger
	Metrics *metrics.Metrics
	// MaxCommit bounds the transitions of one reading committed together
	// (0: all of them). A replicated store needs it: one commit carries a
	// bounded number of writes, and a reading on a topic that hundreds of
	// rules watch would otherwise never fit. The transitions are then
	// committed in chunks, in order; if one fails, those before it stay
	// committed and the redelivered reading changes nothing for them
	// (their series are already in their new state).
	MaxCommit int
}

// New returns an Engine.
func New(o Options) *Engine {
	e := &Engine{
		tracker: o.Tracker, commit: o.Commit, db: o.DB, now: o.Now, log: o.Log, m: o.Metrics, maxCommit: o.MaxCommit,
		received: map[string]prometheus.Counter{"mqtt": o.Metrics.MessagesReceived.WithLabelValues("mqtt")},
	}
	e.rules.Store(o.Rules)
	return e
}

// Rules are the rules in force.
func (e *Engine) Rules() *rules.Engine { return e.rules.Load() }

// SwapRules puts rs in force (a reload; the tracker was told first).
func (e *Engine) SwapRules(rs *rules.Engine) { e.rules.Store(rs) }

// Handled is how many events the engine has fully processed.
func (e *Engine) Handled() uint64 { return e.handled.Load() }

// apply hands transitions to the notify stage, applies what became of
// their mails to the live series and releases them; when the commit
// fails, none was committed and each series is as it was before.
func (e *Engine) apply(trs []alerts.Transition) error {
	outs, err := e.commit.CommitAll(trs)
	if err != nil {
		for _, tr := range trs {
			e.tracker.Abort(tr)
		}
		return err
	}
	for i, tr := range trs {
		if out := outs[i]; out.Mailed {
			e.tracker.Mailed(tr, out.Sent, out.Thread, out.Subject, out.RetryAt)
			if out.HeldBySilence {
				e.tracker.HeldBySilence(tr)
			}
		}
		e.tracker.Settle(tr)
	}
	return nil
}

// Handle implements the sources' handler. An error means the event's alerts
// may not be in the outbox, so the ingress must not acknowledge it.
func (e *Engine) Handle(ev *event.Event) error {
	e.countReceived(ev.Source)
	if reason := unusableTopic(ev.Topic); reason != "" {
		// MQTT allows 64 KiB topics; a series key must fit bbolt and a
		// mail header. Such a message can never alert: drop it, counted,
		// rather than retry a write that can never succeed.
		e.m.MessagesDropped.WithLabelValues(reason).Inc()
		e.log.Debug("message dropped", "reason", reason, "topic", ShortTopic(ev.Topic))
		e.handled.Add(1)
		return nil
	}
	var buf [16]rules.Reading
	var trBuf [4]alerts.Transition
	trs := trBuf[:0] // what the reading changed, committed together
	for _, rd := range e.rules.Load().Evaluate(ev, buf[:0]) {
		if rd.Breach {
			e.matched(rd.Rule.Name)
		}
		tr, ok, err := e.observe(&rd)
		if errors.Is(err, alerts.ErrTooManySeries) {
			// Logged by the tracker's warning, once per rule per hour.
			e.m.MessagesDropped.WithLabelValues("too_many_series").Inc()
			continue
		}
		if err != nil {
			for _, tr := range trs {
				e.tracker.Abort(tr)
			}
			return err
		}
		if ok {
			trs = append(trs, tr)
		}
	}
	for len(trs) > 0 {
		n := len(trs)
		if e.maxCommit > 0 {
			n = min(n, e.maxCommit)
		}
		if err := e.apply(trs[:n]); err != nil {
			for _, tr := range trs[n:] {
				e.tracker.Abort(tr)
			}
			return err // the redelivered message decides again
		}
		trs = trs[n:]
	}
	e.handled.Add(1)
	return nil
}

// Quick handles ev at once, on the source's receiving goroutine, when it
// changes nothing that must be committed: every rule's reading is a
// normal one of a series that is ok, or a live sign for a silence rule's
// series that is not firing (ObserveQuiet). It never waits on the store
// and never writes (it takes the tracker's lock, which status, reload and
// checkpoints hold briefly). false: nothing was done, and ev goes to
// Handle on a worker.
// Most readings of a calm fleet end here, without a hand-off.
func (e *Engine) Quick(ev *event.Event) bool {
	if unusableTopic(ev.Topic) != "" {
		return false // Handle counts and drops it
	}
	rs := e.rules.Load()
	var buf [16]rules.Reading
	rds := rs.Readings(ev, buf[:0])
	if !e.tracker.ObserveQuiet(rds) {
		return false
	}
	rs.Report(rds)
	for i := range rds {
		if rds[i].Breach && rds[i].Err == nil {
			e.matched(rds[i].Rule.Name)
		}
	}
	e.countReceived(ev.Source)
	e.handled.Add(1)
	return true
}

// countReceived counts an event of source (the usual sources' counters
// were looked up once).
func (e *Engine) countReceived(source string) {
	if c := e.received[source]; c != nil {
		c.Inc()
		return
	}
	e.m.MessagesReceived.WithLabelValues(source).Inc()
}

// matched counts a breaching reading of rule, without building the
// metric's labels for each one.
func (e *Engine) matched(rule string) {
	c, ok := e.matches.Load(rule)
	if !ok {
		c, _ = e.matches.LoadOrStore(rule, e.m.RuleMatches.WithLabelValues(rule))
	}
	c.(prometheus.Counter).Inc()
}

// observe applies a reading to its series, waiting while a transition of
// that series (a timer's) is being saved: milliseconds, bounded by
// busyWait in case the store hangs (the reading is then retried).
func (e *Engine) observe(rd *rules.Reading) (alerts.Transition, bool, error) {
	tr, ok, err := e.tracker.Observe(rd)
	if !errors.Is(err, alerts.ErrBusy) {
		return tr, ok, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), busyWait)
	defer cancel()
	return e.tracker.ObserveWait(ctx, rd)
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

// ShortTopic is t cut for a log line.
func ShortTopic(t string) string {
	if len(t) > 80 {
		return strings.ToValidUTF8(t[:80], "?") + "…"
	}
	return t
}

// timerBatch is how many transitions of timers due together (a fleet
// gone silent at once) are committed in one transaction.
const timerBatch = 64

// RunTimers fires what time alone decides: for: elapsed, reminders,
// held-back first mails, silent devices.
func (e *Engine) RunTimers(ctx context.Context) error {
	for {
		wait := time.Hour
		if next := e.tracker.Next(); !next.IsZero() {
			wait = max(next.Sub(e.now()), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-e.tracker.Wake():
		case <-t.C:
		}
		t.Stop()
		failed := false
		for due := e.tracker.Due(e.now()); len(due) > 0; {
			n := min(len(due), timerBatch)
			trs := due[:n]
			due = due[n:]
			if failed {
				for _, tr := range trs {
					e.tracker.Abort(tr)
				}
				continue
			}
			if err := e.apply(trs); err != nil {
				tr := trs[0]
				e.log.Error("alert timer", "rule", tr.Notification.Rule.Name, "series", tr.Notification.Series, "transitions", n, "err", err)
				failed = true
			}
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

// RunCheckpoints saves silence rules' last-seen times that changed, every
// interval, in small transactions between which alerts are recorded.
func (e *Engine) RunCheckpoints(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil // Run saves the rest once readings have stopped
		case <-t.C:
			if _, err := e.tracker.Checkpoint(ctx, e.db); err != nil {
				e.log.Error("save last-seen times", "err", err)
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

// SaveLastSeen is the checkpoint at shutdown.
func (e *Engine) SaveLastSeen() {
	start := time.Now()
	left, err := e.tracker.Flush(e.db, e.now().Add(lastSeenShutdownBudget))
	switch {
	case err != nil:
		e.log.Error("save last-seen times at shutdown", "err", err, "series_left", left)
	case left > 0:
		e.log.Warn("shutdown: last-seen times not all saved in time; a device among them first seen since the last checkpoint, "+
			"and never again, will not be reported silent", "series_left", left, "budget", lastSeenShutdownBudget)
	default:
		e.log.Debug("last-seen times saved", "took", time.Since(start))
	}
}
