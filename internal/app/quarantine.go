package app

import (
	"log/slog"

	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/store"
)

// Entries of the store that cannot be decoded are moved to its quarantine
// by the package that meets them (store.Quarantine); the rest keeps
// flowing. Like Postfix with a damaged queue file: keep it aside, say so
// once, let the operator look and delete it.

// consequence tells the operator what an unreadable entry of a bucket
// means for alertd, and what to do.
var consequence = map[string]string{
	string(store.BucketOutbox):   "this mail cannot be sent; alertd outbox list shows it, alertd outbox drop ID deletes it",
	string(store.BucketDead):     "this dead letter cannot be retried; alertd outbox list shows it, alertd outbox drop ID deletes it",
	string(store.BucketSilences): "this silence no longer holds mail back; add it again; alertd silence remove ID deletes the damaged copy",
	string(store.BucketGroups):   "this notification is left out of its group mail",
	string(store.BucketSeries):   "the cooldown of this series starts afresh",
	string(store.BucketRules):    "the rate window and held-back count of this rule start afresh",
	string(store.BucketAlerts):   "the alert state of this series starts afresh",
}

// reportQuarantined logs and counts one entry moved to quarantine; it runs
// once the move is committed, so once per entry.
func reportQuarantined(log *slog.Logger, m *metrics.Metrics, q store.Quarantined) {
	m.StoreQuarantined.WithLabelValues(q.Bucket).Inc()
	log.Error("store entry could not be read: moved to quarantine, the rest goes on",
		"bucket", q.Bucket, "key", q.KeyText(), "size", len(q.Raw), "err", q.Error, "consequence", consequence[q.Bucket])
}

func (a *App) reportQuarantine(q store.Quarantined) { reportQuarantined(a.log, a.metrics, q) }

// refreshQuarantineMetrics sets the gauge of what is in quarantine now,
// which the counter cannot say: it starts at 0 with each process, and an
// admin command run while alertd was stopped may have moved entries.
func (a *App) refreshQuarantineMetrics() {
	var n map[string]int
	if err := a.db.View(func(tx *store.Tx) error {
		n = store.CountQuarantined(tx)
		return nil
	}); err != nil {
		return
	}
	for bucket, count := range n {
		a.metrics.StoreQuarantined.WithLabelValues(bucket) // present at 0 from the start
		a.metrics.QuarantineEntries.WithLabelValues(bucket).Set(float64(count))
	}
}
