package app

import (
	"log/slog"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/engine"
	"github.com/alertd/alertd/internal/metrics"
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
	o.m.PayloadInvalid.WithLabelValues(rule).Inc()
	o.log.Debug("payload not usable by rule", "rule", rule, "topic", topic, "reason", err)
}
