package app

import (
	"cmp"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/notify"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
)

// deadShown is how many dead letters the status shows; alertd outbox list
// has them all.
const deadShown = 20

// Status is the running alertd at this moment, for the status page and
// alertd status. It only reads: the series from the tracker's table, the
// rest from the store and the metrics.
//
// In cluster mode the alerts and the outbox are those of the partitions
// this instance owns, and Cluster says who owns the others.
func (a *App) Status() httpapi.Status {
	now := a.now()
	host, _ := os.Hostname()
	st := httpapi.Status{Host: host, At: now, Silences: a.silences.List(now)}
	for _, s := range a.sources.health() {
		st.Sources = append(st.Sources, httpapi.StatusSource{Name: s.Name, Ready: s.Ready, Why: s.Why})
	}
	var views []stageView
	if a.tracker != nil {
		views = append(views, stageView{a.tracker, a.outbox, a.notify})
	}
	if cfg := a.config(); clustered(cfg) {
		st.Cluster = &httpapi.StatusCluster{Instance: cfg.Store.NATS.Instance, Error: "not connected to NATS yet"}
		if cn := a.cluster.Load(); cn != nil {
			st.Cluster = cn.status()
			for _, pp := range cn.pipelines() {
				views = append(views, stageView{pp.tracker, pp.outbox, pp.notify})
			}
		}
	}
	var outboxes []*outbox.Outbox
	for _, v := range views {
		for _, s := range v.tracker.Active() {
			if s.State == alerts.Pending {
				st.Pending = append(st.Pending, a.statusAlert(&s, now, v.notify))
			} else {
				st.Firing = append(st.Firing, a.statusAlert(&s, now, v.notify))
			}
		}
		outboxes = append(outboxes, v.outbox)
	}
	if len(views) > 1 { // newest first, as each tracker lists its own
		byNewest := func(x, y httpapi.StatusAlert) int { return y.Since.Compare(x.Since) }
		slices.SortStableFunc(st.Firing, byNewest)
		slices.SortStableFunc(st.Pending, byNewest)
	}
	st.Outbox = outboxStatus(outboxes, now)
	st.Suppressed = suppressedCounts(a.metrics.Suppressed)
	st.Config = a.configStatus()
	return st
}

// stageView is what the status reads of one store's stages: the single
// store's, or one owned partition's.
type stageView struct {
	tracker *alerts.Tracker
	outbox  *outbox.Outbox
	notify  *notify.Notifier // nil before Run built it
}

func (a *App) statusAlert(s *alerts.Series, now time.Time, nf *notify.Notifier) httpapi.StatusAlert {
	n := rules.Notification{Rule: s.Rule, Series: s.Topic, Since: s.Since, At: now, Value: s.Value, LastSeen: s.LastSeen}
	d := n.Data(0) // the threshold as the mails say it
	al := httpapi.StatusAlert{
		Rule: s.Rule.Name, Series: s.Topic, Severity: s.Rule.Severity, State: s.State.String(), Since: s.Since,
		Silent: s.Rule.Silence(), Field: s.Rule.Field, Value: s.Value.Text, Threshold: d.Threshold, LastSeen: s.LastSeen,
	}
	switch {
	case s.State == alerts.Pending:
		al.FiresAt = s.Since.Add(s.Rule.For)
	case s.Notified:
		al.LastMail = s.LastMail
	default:
		al.Held, al.RetryAt = a.heldBack(s, now, nf)
	}
	return al
}

// heldBack says why a firing series' first mail has not gone out, and
// when it is tried again. The tracker knows only when; the reason is
// found as notify decided it: a silence first, then the cooldown (which
// sets the retry), then the rate limit (whose summary mail waits).
func (a *App) heldBack(s *alerts.Series, now time.Time, nf *notify.Notifier) (string, time.Time) {
	if until := a.silences.Silenced(s.Rule.Name, s.Topic, now); !until.IsZero() {
		return string(notify.Silenced), until
	}
	if !s.RetryAt.IsZero() {
		return string(notify.Cooldown), s.RetryAt
	}
	if nf != nil && s.Rule.RateLimit.N > 0 {
		if at, ok := nf.GroupDue(s.Rule.Name); ok {
			return string(notify.RateLimited), at
		}
	}
	// Listed in a summary mail already sent, or being queued right now.
	return "", time.Time{}
}

// outboxStatus sums the outboxes (one, or one per owned partition): the
// head is the oldest pending mail's, the dead letters the newest of all.
func outboxStatus(obs []*outbox.Outbox, now time.Time) httpapi.StatusOutbox {
	var out httpapi.StatusOutbox
	for _, ob := range obs {
		ov, err := ob.Overview(deadShown)
		if err != nil {
			out.Error = err.Error()
			continue
		}
		out.Pending, out.Dead = out.Pending+ov.Pending, out.Dead+ov.Dead
		if h := ov.Head; h != nil && (out.Oldest.IsZero() || ov.Oldest.Before(out.Oldest)) {
			out.Oldest, out.Attempts, out.LastError, out.NextAttempt = ov.Oldest, h.Attempts, h.LastError, time.Time{}
			if h.Next.After(now) {
				out.NextAttempt = h.Next
			}
		}
		for _, e := range ov.DeadLetters {
			out.DeadLetters = append(out.DeadLetters, httpapi.StatusDead{
				ID: e.ID, Rule: e.Rule, Series: e.Series, Subject: e.Subject, To: e.To, Attempts: e.Attempts, DeadAt: e.DeadAt, Error: e.LastError,
			})
		}
		if un, err := ob.Unreadable(); err == nil {
			out.Unreadable += len(un)
		}
	}
	if len(obs) > 1 {
		slices.SortStableFunc(out.DeadLetters, func(x, y httpapi.StatusDead) int { return y.DeadAt.Compare(x.DeadAt) })
		out.DeadLetters = out.DeadLetters[:min(len(out.DeadLetters), deadShown)]
	}
	return out
}

func (a *App) configStatus() httpapi.StatusConfig {
	a.cfgMu.Lock()
	c := httpapi.StatusConfig{File: a.cfg.File, Rules: len(a.cfg.Rules)}
	a.cfgMu.Unlock()
	m := a.metrics
	c.LoadedAt = time.Unix(0, int64(metricValue(m.ConfigLastReloadAt)*1e9)).Round(time.Millisecond)
	c.LastReloadOK = metricValue(m.ConfigLastReloadOK) == 1
	c.Reloads = int(metricValue(m.ConfigReloads.WithLabelValues("success")))
	c.ReloadsRefused = int(metricValue(m.ConfigReloads.WithLabelValues("error")))
	return c
}

// suppressedCounts reads alertd_notifications_suppressed_total, the
// series that are not zero.
func suppressedCounts(c *prometheus.CounterVec) []httpapi.StatusSuppressed {
	ch := make(chan prometheus.Metric)
	go func() { c.Collect(ch); close(ch) }()
	var out []httpapi.StatusSuppressed
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil || d.GetCounter().GetValue() == 0 {
			continue
		}
		s := httpapi.StatusSuppressed{Count: uint64(d.GetCounter().GetValue())}
		for _, l := range d.GetLabel() {
			switch l.GetName() {
			case "rule":
				s.Rule = l.GetValue()
			case "reason":
				s.Reason = l.GetValue()
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b httpapi.StatusSuppressed) int {
		return cmp.Or(cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Reason, b.Reason))
	})
	return out
}

// metricValue is a gauge's or a counter's value.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if m.Write(&d) != nil {
		return 0
	}
	if d.Gauge != nil {
		return d.GetGauge().GetValue()
	}
	return d.GetCounter().GetValue()
}
