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
	"github.com/alertd/alertd/internal/rules"
)

// deadShown is how many dead letters the status shows; alertd outbox list
// has them all.
const deadShown = 20

// Status is the running alertd at this moment, for the status page and
// alertd status. It only reads: the series from the tracker's table, the
// rest from the store and the metrics.
func (a *App) Status() httpapi.Status {
	now := a.now()
	host, _ := os.Hostname()
	st := httpapi.Status{Host: host, At: now, Silences: a.silences.List(now), Outbox: a.outboxStatus(now)}
	for _, s := range a.sources.health() {
		st.Sources = append(st.Sources, httpapi.StatusSource{Name: s.Name, Ready: s.Ready, Why: s.Why})
	}
	for _, s := range a.tracker.Active() {
		if s.State == alerts.Pending {
			st.Pending = append(st.Pending, a.statusAlert(&s, now))
		} else {
			st.Firing = append(st.Firing, a.statusAlert(&s, now))
		}
	}
	st.Suppressed = suppressedCounts(a.metrics.Suppressed)
	st.Config = a.configStatus()
	return st
}

func (a *App) statusAlert(s *alerts.Series, now time.Time) httpapi.StatusAlert {
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
		al.Held, al.RetryAt = a.heldBack(s, now)
	}
	return al
}

// heldBack says why a firing series' first mail has not gone out, and
// when it is tried again. The tracker knows only when; the reason is
// found as notify decided it: a silence first, then the cooldown (which
// sets the retry), then the rate limit (whose summary mail waits).
func (a *App) heldBack(s *alerts.Series, now time.Time) (string, time.Time) {
	if until := a.silences.Silenced(s.Rule.Name, s.Topic, now); !until.IsZero() {
		return string(notify.Silenced), until
	}
	if !s.RetryAt.IsZero() {
		return string(notify.Cooldown), s.RetryAt
	}
	if a.notify != nil && s.Rule.RateLimit.N > 0 {
		if at, ok := a.notify.GroupDue(s.Rule.Name); ok {
			return string(notify.RateLimited), at
		}
	}
	// Listed in a summary mail already sent, or being queued right now.
	return "", time.Time{}
}

func (a *App) outboxStatus(now time.Time) httpapi.StatusOutbox {
	var out httpapi.StatusOutbox
	ov, err := a.outbox.Overview(deadShown)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.Pending, out.Oldest, out.Dead = ov.Pending, ov.Oldest, ov.Dead
	if h := ov.Head; h != nil {
		out.Attempts, out.LastError = h.Attempts, h.LastError
		if h.Next.After(now) {
			out.NextAttempt = h.Next
		}
	}
	for _, e := range ov.DeadLetters {
		out.DeadLetters = append(out.DeadLetters, httpapi.StatusDead{
			ID: e.ID, Rule: e.Rule, Series: e.Series, Subject: e.Subject, To: e.To, Attempts: e.Attempts, DeadAt: e.DeadAt, Error: e.LastError,
		})
	}
	if un, err := a.outbox.Unreadable(); err == nil {
		out.Unreadable = len(un)
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
