// Package selfcheck is alertd watching itself, as a source of readings
// like any other: it turns its sources' absence and the outbox's oldest
// mail into events on topics under $alertd/ (which MQTT wildcards never
// match and no broker is asked for), and supplies two built-in rules that
// watch them with a threshold. A self alert therefore fires, threads,
// resolves and is held back by the cooldown and the rate limit like any
// other alert.
package selfcheck

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/event"
)

// Names of the built-in rules, and the topic prefix of their readings.
const (
	SourceRule = "alertd-source-down"
	MailRule   = "alertd-mail-delayed"
	Prefix     = "$alertd/"
)

// Rules are the built-in rules of cfg's self alerts; none when they are off.
func Rules(cfg *config.Config) []config.Rule {
	sa := &cfg.SelfAlerts
	if !sa.On(cfg) || len(sa.To) == 0 {
		return nil
	}
	host, _ := os.Hostname()
	zero := 0.0
	down := sa.SourceDownAfter.D().Seconds() - 0.5 // fires when it reaches the threshold
	late := sa.MailDelayedAfter.D().Seconds() - 0.5
	common := func(r config.Rule) config.Rule {
		r.To, r.Severity, r.Hysteresis = sa.To, "critical", &zero
		r.Cooldown = config.Duration(time.Minute)
		r.RateLimit = config.Rate{N: 6, Per: time.Hour} // a flapping broker is not forty mails
		return r
	}
	return []config.Rule{
		common(config.Rule{
			Name: SourceRule, Topic: Prefix + "source/+", Field: "down_seconds", Above: &down,
			Subject: fmt.Sprintf("[alertd] %s: {{.Device}} unreachable for %s", host, sa.SourceDownAfter),
			Body: `{{if eq .State "resolved" -}}
Resolved: alertd on ` + host + ` reaches {{.Device}} again, after {{.Duration}} away.
{{- else -}}
Problem: alertd on ` + host + ` has not reached its {{.Device}} source for ` + sa.SourceDownAfter.String() + ` (since {{.Since}}).
While it is away, alertd cannot hear the devices behind it: their alerts, and their silence, wait for it.
{{- end}}
`,
		}),
		common(config.Rule{
			Name: MailRule, Topic: Prefix + "outbox", Field: "oldest_pending_seconds", Above: &late,
			Subject: fmt.Sprintf("[alertd] %s: mail delayed", host),
			Body: `{{if eq .State "resolved" -}}
Resolved: alertd on ` + host + ` delivers mail again. Alerts were delayed by up to {{.Duration}} (since {{.Since}}).
{{- else -}}
Problem: alertd on ` + host + ` has held a mail for more than ` + sa.MailDelayedAfter.String() + ` without delivering it (the oldest waited {{.Value}} s).
You read this once the mail server takes mail again: the alerts before it were late by that much. alertd outbox list shows the queue.
{{- end}}
`,
		}),
	}
}

// Every is how often the readings are taken: often enough for a threshold
// of a few seconds, rare enough to cost nothing.
func Every(cfg *config.Config) time.Duration {
	sa := cfg.SelfAlerts
	return min(5*time.Second, max(sa.SourceDownAfter.D()/4, 250*time.Millisecond), max(sa.MailDelayedAfter.D()/4, 250*time.Millisecond))
}

// Probe is one source's readiness.
type Probe struct {
	Name  string
	Ready func() bool
}

// Handler takes the readings (the engine).
type Handler interface {
	Handle(ev *event.Event) error
}

// Source takes the readings every Every until its context ends.
type Source struct {
	Probes []Probe
	// Oldest is when the oldest mail waiting in the outbox was queued
	// (zero when none waits).
	Oldest  func() (time.Time, error)
	Handler Handler
	Every   time.Duration
	Now     func() time.Time
	// OnError hears of a reading the handler refused (it is taken again
	// at the next tick).
	OnError func(topic string, err error)
}

// Run takes the readings until ctx ends.
func (s *Source) Run(ctx context.Context) error {
	t := time.NewTicker(s.Every)
	defer t.Stop()
	away := map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := s.Now()
		for _, p := range s.Probes {
			down := 0.0
			if p.Ready() {
				delete(away, p.Name)
			} else {
				if away[p.Name].IsZero() {
					away[p.Name] = now
				}
				down = now.Sub(away[p.Name]).Seconds()
			}
			s.reading(Prefix+"source/"+p.Name, fmt.Sprintf(`{"down_seconds": %.0f}`, down), now)
		}
		if oldest, err := s.Oldest(); err == nil {
			late := 0.0
			if !oldest.IsZero() {
				late = now.Sub(oldest).Seconds()
			}
			s.reading(Prefix+"outbox", fmt.Sprintf(`{"oldest_pending_seconds": %.0f}`, late), now)
		}
	}
}

func (s *Source) reading(topic, payload string, now time.Time) {
	ev := &event.Event{Source: "self", Topic: topic, Payload: []byte(payload), Received: now}
	if err := s.Handler.Handle(ev); err != nil && s.OnError != nil {
		s.OnError(topic, err)
	}
}
