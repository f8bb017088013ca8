// Package metrics defines alertd's Prometheus metrics on a registry of its
// own (never the global one, so tests can build many). Labels carry rule
// names and fixed reasons only: never devices, topics or recipients, whose
// number is unbounded.
package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is every collector alertd updates.
type Metrics struct {
	Registry *prometheus.Registry

	MessagesReceived *prometheus.CounterVec // by source
	MessagesDropped  *prometheus.CounterVec // by reason
	RuleMatches      *prometheus.CounterVec // by rule
	PayloadInvalid   *prometheus.CounterVec // by rule, reason
	// PayloadFieldMissing counts readings without the rule's field: not
	// an error.
	PayloadFieldMissing *prometheus.CounterVec // by rule
	Suppressed          *prometheus.CounterVec // by rule, reason
	MailQueued          prometheus.Counter
	MailSent            prometheus.Counter
	MailFailed          *prometheus.CounterVec // by kind
	MailDead            prometheus.Counter
	MailAttempts        *prometheus.CounterVec // by result: 2xx, 4xx, 5xx, network
	QueueDepth          prometheus.Gauge
	OldestPending       prometheus.Gauge
	MQTTConnected       prometheus.Gauge

	StoreQuarantined  *prometheus.CounterVec // by bucket
	QuarantineEntries *prometheus.GaugeVec   // by bucket

	IngressSMTP *prometheus.CounterVec // by result
	IngressHTTP *prometheus.CounterVec // by result

	ConfigReloads      *prometheus.CounterVec // by result: success, error
	ConfigLastReloadOK prometheus.Gauge
	ConfigLastReloadAt prometheus.Gauge

	preflightOnce sync.Once
	preflightOK   prometheus.Gauge
}

// New registers every metric on a fresh registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		reg.MustRegister(g)
		return g
	}
	m := &Metrics{
		Registry:         reg,
		MessagesReceived: counter("alertd_messages_received_total", "Messages received, by ingress.", "source"),
		MessagesDropped:  counter("alertd_messages_dropped_total", "Messages not used, by reason (topic_too_long, topic_invalid, too_many_series).", "reason"),
		RuleMatches:      counter("alertd_rule_matches_total", "Readings whose rule condition held.", "rule"),
		PayloadInvalid:   counter("alertd_payload_invalid_total", "Payloads a rule could not read, by reason (not_json, not_number, not_finite, too_large, ...): a broken device or sketch.", "rule", "reason"),
		PayloadFieldMissing: counter("alertd_payload_field_missing_total",
			"Readings on a rule's topic without the rule's field: often ordinary (a device that sends several kinds of message).", "rule"),
		Suppressed:    counter("alertd_notifications_suppressed_total", "Notifications held back, by reason (cooldown, rate_limit).", "rule", "reason"),
		MailQueued:    counter("alertd_mail_queued_total", "Mails written to the outbox.").WithLabelValues(),
		MailSent:      counter("alertd_mail_sent_total", "Mails accepted by the SMTP server (or written to the spool).").WithLabelValues(),
		MailFailed:    counter("alertd_mail_failed_total", "Failed delivery attempts, by kind (temporary, network, auth, config, permanent).", "kind"),
		MailDead:      counter("alertd_mail_dead_total", "Mails given up on and moved to the dead bucket.").WithLabelValues(),
		MailAttempts:  counter("alertd_mail_attempts_total", "SMTP delivery attempts, by result (2xx, 4xx, 5xx, network).", "result"),
		QueueDepth:    gauge("alertd_mail_queue_depth", "Mails waiting in the outbox."),
		OldestPending: gauge("alertd_mail_oldest_pending_seconds", "Age of the oldest mail waiting in the outbox (0 when empty)."),
		MQTTConnected: gauge("alertd_mqtt_connected", "1 while connected to the MQTT broker."),

		StoreQuarantined: counter("alertd_store_quarantined_total", "Store entries that could not be decoded, moved to quarantine, by the bucket they were in.", "bucket"),
		QuarantineEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "alertd_store_quarantine_entries",
			Help: "Entries in quarantine now, by the bucket they came from (kept until an operator drops them)."}, []string{"bucket"}),
	}
	reg.MustRegister(m.QuarantineEntries)
	m.IngressSMTP = counter("alertd_ingress_smtp_total", "Mails and sessions of the SMTP ingress, by result (accepted, relay_denied, auth_failed, too_big, rate_limited, error).", "result")
	m.IngressHTTP = counter("alertd_ingress_http_total", "Requests of the HTTP ingress, by result (accepted, unauthorized, forbidden, too_big, unsupported, rate_limited, bad_request, error).", "result")
	for _, r := range []string{"accepted", "relay_denied", "auth_failed", "too_big", "rate_limited", "error"} {
		m.IngressSMTP.WithLabelValues(r)
	}
	m.ConfigReloads = counter("alertd_config_reload_total", "Configuration reloads (SIGHUP, alertd reload), by result (success, error).", "result")
	m.ConfigLastReloadOK = gauge("alertd_config_last_reload_successful", "1 when the last reload succeeded (or none was tried), 0 when it was refused.")
	m.ConfigLastReloadAt = gauge("alertd_config_last_reload_success_timestamp_seconds", "When the configuration was last loaded successfully (start or reload), Unix seconds.")
	for _, result := range []string{"success", "error"} {
		m.ConfigReloads.WithLabelValues(result)
	}
	m.ConfigLastReloadOK.Set(1)
	m.ConfigLastReloadAt.SetToCurrentTime()
	for _, kind := range []string{"temporary", "network", "auth", "config", "permanent"} {
		m.MailFailed.WithLabelValues(kind)
	}
	for _, result := range []string{"2xx", "4xx", "5xx", "network"} {
		m.MailAttempts.WithLabelValues(result)
	}
	return m
}

// SMTPPreflight exports the outcome of the SMTP preflight at start as
// alertd_smtp_preflight_ok (1 passed, 0 failed). The metric is absent until
// the preflight has an outcome, and without an smtp section.
func (m *Metrics) SMTPPreflight(ok bool) {
	m.preflightOnce.Do(func() {
		m.preflightOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "alertd_smtp_preflight_ok",
			Help: "1 when the SMTP preflight at start (connect, EHLO, STARTTLS, AUTH, QUIT; no mail) passed, 0 when it failed."})
		m.Registry.MustRegister(m.preflightOK)
	})
	v := 0.0
	if ok {
		v = 1
	}
	m.preflightOK.Set(v)
}

// TrackSeries exports alertd_series{rule} and alertd_series_evicted_total{rule}
// from stats at each scrape: the alert tracker keeps the counts, so a
// reading costs no metric update.
func (m *Metrics) TrackSeries(stats func(yield func(rule string, series int, evicted uint64))) {
	m.Registry.MustRegister(seriesCollector(stats))
}

var (
	seriesDesc = prometheus.NewDesc("alertd_series",
		"Series (rule × concrete topic) tracked, by rule (bounded by max_series and limits.max_series).", []string{"rule"}, nil)
	evictedDesc = prometheus.NewDesc("alertd_series_evicted_total",
		"Series evicted to make room for new ones at max_series or limits.max_series, by rule.", []string{"rule"}, nil)
)

type seriesCollector func(yield func(rule string, series int, evicted uint64))

func (c seriesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- seriesDesc; ch <- evictedDesc }

func (c seriesCollector) Collect(ch chan<- prometheus.Metric) {
	c(func(rule string, series int, evicted uint64) {
		ch <- prometheus.MustNewConstMetric(seriesDesc, prometheus.GaugeValue, float64(series), rule)
		ch <- prometheus.MustNewConstMetric(evictedDesc, prometheus.CounterValue, float64(evicted), rule)
	})
}

// PartitionsOwned exports alertd_cluster_partitions_owned, read from n at
// each scrape.
func (m *Metrics) PartitionsOwned(n func() int) {
	_ = m.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "alertd_cluster_partitions_owned", Help: "Partitions this instance owns (store.backend: nats).",
	}, func() float64 { return float64(n()) }))
}

// SourceUp exports alertd_source_up{source} for one source, read from up
// at each scrape.
func (m *Metrics) SourceUp(source string, up func() bool) {
	_ = m.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "alertd_source_up", Help: "1 while a source of readings is ready (mqtt: subscribed; smtp, http: serving).",
		ConstLabels: prometheus.Labels{"source": source},
	}, func() float64 {
		if up() {
			return 1
		}
		return 0
	}))
}
