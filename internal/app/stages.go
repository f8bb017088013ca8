package app

import (
	"log/slog"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/notify"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

// The stages that keep state in a store, built alike for the single store
// of one alertd and for each partition of the cluster mode.

// stateOn builds the dedupe gate and the outbox over db, each reporting
// what it cannot read.
func (a *App) stateOn(db *store.DB) (*dedupe.Gate, *outbox.Outbox) {
	gate := dedupe.New(db, a.now)
	gate.OnQuarantine = a.reportQuarantine
	ob := outbox.New(db)
	ob.OnQuarantine = a.reportQuarantine
	return gate, ob
}

// newTracker is the alert state under cfg's limits.*; batch bounds the
// series a checkpoint transaction writes (0: alerts.CheckpointBatch). In
// cluster mode a partition's state keeps the series of rules this
// instance does not know (another may, during a rolling reload).
func (a *App) newTracker(cfg *config.Config, log *slog.Logger, batch int) *alerts.Tracker {
	return alerts.New(alerts.Options{KeepUnknownRules: clustered(cfg),
		Start: a.now(), MaxSeries: cfg.Limits.MaxSeries, Budgets: seriesBudgets(cfg), Now: a.now,
		OnQuarantine: a.reportQuarantine, Warn: func(w alerts.Warning) { logSeriesLimit(log, w) }, Batch: batch,
	})
}

// newNotifier is the notify stage over db; maxGroupItems bounds a group
// mail (0: all that wait).
func (a *App) newNotifier(db *store.DB, gate *dedupe.Gate, sil notify.Silences, ob *outbox.Outbox,
	rule func(string) *rules.Rule, log *slog.Logger, maxGroupItems int) *notify.Notifier {
	nf := notify.New(notify.Options{
		DB: db, Gate: gate, Silences: sil, Outbox: ob, From: a.from, Now: a.now,
		Log: log, Metrics: a.metrics, Rule: rule, Footer: a.footer(), MaxGroupItems: maxGroupItems,
	})
	nf.OnQuarantine = a.reportQuarantine
	return nf
}
