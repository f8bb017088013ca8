package app

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/engine"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/selfcheck"
	"github.com/alertd/alertd/internal/store"
)

// In cluster mode each instance says when it is in trouble itself: NATS
// out of its reach, or mail it cannot deliver. Those are the instance's
// own, not a partition's (a partition moves; an instance cut off from NATS
// owns none), so the self alerts run in a small pipeline of their own over
// a local store beside store.path (self.db: their alert state, dedupe
// windows and mails), mailing through the instance's SMTP sessions. The
// silences are the cluster's: `alertd silence add -rule alertd-source-down`
// quiets every instance.

// runSelfAlerts runs the self alerts of cfg until ctx ends, with srcs as
// the sources to watch and oldest the oldest mail waiting in the owned
// partitions' outboxes; it returns at once when self alerts are off.
func (a *App) runSelfAlerts(ctx context.Context, cfg *config.Config, srcs sources, oldest func() time.Time) error {
	extra := selfcheck.Rules(cfg)
	if len(extra) == 0 {
		return nil
	}
	c := *cfg
	c.Rules = extra
	rs, err := rules.Compile(&c, invalidPayloads{a.metrics, a.log})
	if err != nil {
		return err
	}
	path := filepath.Join(filepath.Dir(cfg.Store.Path), "self.db")
	db, rec, err := store.Open(path)
	if err != nil {
		return fmt.Errorf("self alerts: %w", err)
	}
	defer db.Close()
	if rec != nil {
		logRecovery(a.log, path, rec)
	}
	log := a.log.With("component", "self-alerts")
	gate, ob := a.stateOn(db)
	tracker := a.newTracker(&c, log, 0)
	if _, err := tracker.Load(db, rs); err != nil {
		return fmt.Errorf("self alerts: %w", err)
	}
	nf := a.newNotifier(db, gate, a.silences, ob, rs.Rule, log, 0)
	eng := engine.New(engine.Options{Rules: rs, Tracker: tracker, Commit: nf, DB: db, Now: a.now, Log: log, Metrics: a.metrics})
	if err := nf.RestoreGroups(); err != nil {
		return fmt.Errorf("self alerts: %w", err)
	}
	d := a.deliverer()
	d.Queue, d.Parallel, d.OnIdle = ob, nil, nil // a.transport: the instance's pool
	d.Log = log.With("component", "mailer")
	probes := make([]selfcheck.Probe, len(srcs))
	for i, s := range srcs {
		probes[i] = selfcheck.Probe{Name: s.name, Ready: s.ready}
	}
	src := &selfcheck.Source{
		Probes: probes, Handler: eng, Every: selfcheck.Every(cfg), Now: a.now,
		Oldest: func() (time.Time, error) {
			t := oldest()
			if st, err := ob.Stats(); err == nil && !st.Oldest.IsZero() && (t.IsZero() || st.Oldest.Before(t)) {
				t = st.Oldest // a self alert waiting is a mail delayed too
			}
			return t, nil
		},
		OnError: func(topic string, err error) { log.Debug("self check", "topic", topic, "err", err) },
	}
	done := make(chan struct{}, 4)
	for _, run := range []func(context.Context) error{eng.RunTimers, nf.RunGroups, d.Run, src.Run} {
		go func() {
			defer func() { done <- struct{}{} }()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				log.Error("self alerts", "err", err)
			}
		}()
	}
	for range 4 {
		<-done
	}
	eng.SaveLastSeen()
	return nil
}

// oldestMail is when the oldest mail waiting in the owned partitions'
// outboxes was queued (zero: none waits, or no partition is owned).
func (a *App) oldestMail() time.Time {
	if cn := a.cluster.Load(); cn != nil {
		_, oldest := cn.outboxTotals()
		return oldest
	}
	return time.Time{}
}
