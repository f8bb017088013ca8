package app

import (
	"encoding/json"
	"log/slog"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/engine"
	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

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
	log.Warn(msg, "rule", w.Rule, "filter", w.Filter, "topic", engine.ShortTopic(w.Topic), "limit", w.Limit, "max", w.Max,
		"series", w.Series, "evicted", w.Evicted, "dropped", w.Dropped)
}

// invalidPayloads counts and logs payloads a rule could not use.
type invalidPayloads struct {
	m   *metrics.Metrics
	log *slog.Logger
}

func (o invalidPayloads) InvalidPayload(rule, topic string, err error) {
	reason := rules.Reason(err)
	if reason == "field_missing" {
		o.m.PayloadFieldMissing.WithLabelValues(rule).Inc()
	} else {
		o.m.PayloadInvalid.WithLabelValues(rule, reason).Inc()
	}
	o.log.Debug("payload not usable by rule", "rule", rule, "topic", topic, "reason", err)
}

// sessionFilters are the MQTT filters an earlier run left subscribed in
// the broker's persistent session; the subscriber drops those the rules no
// longer have. Unreadable, they are forgotten: the filters are then only
// left to the broker's session expiry.
func (a *App) sessionFilters() []string {
	b, err := a.db.Meta(store.MetaSessionFilters)
	if err != nil || b == nil {
		return nil
	}
	var fs []string
	if err := json.Unmarshal(b, &fs); err != nil {
		a.log.Warn("stored MQTT session filters unreadable; ignored", "err", err)
		return nil
	}
	return fs
}

// saveSessionFilters remembers what the broker may hold for the session.
func (a *App) saveSessionFilters(fs []string) {
	b, _ := json.Marshal(fs)
	if err := a.db.PutMeta(store.MetaSessionFilters, b); err != nil {
		a.log.Warn("could not save the MQTT session filters", "err", err)
	}
}
