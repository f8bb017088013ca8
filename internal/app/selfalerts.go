package app

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/rules"
)

// Self alerts: alertd watches itself through its own engine. A ticker
// turns its sources' absence and the outbox's oldest mail into readings on
// topics under $alertd/, which MQTT wildcards never match and the broker is
// never asked for; two built-in rules watch them with a threshold, so a
// self alert fires, threads, resolves and is held back by the cooldown and
// the rate limit like any other.

const (
	selfSourceRule = "alertd-source-down"
	selfMailRule   = "alertd-mail-delayed"
	selfTopic      = "$alertd/"
)

// selfRules are the built-in rules of cfg's self alerts, none when off.
func selfRules(cfg *config.Config) []config.Rule {
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
			Name: selfSourceRule, Topic: selfTopic + "source/+", Field: "down_seconds", Above: &down,
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
			Name: selfMailRule, Topic: selfTopic + "outbox", Field: "oldest_pending_seconds", Above: &late,
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

// compile builds the rules of cfg with its self alerts.
func compile(cfg *config.Config, obs rules.Observer) (*rules.Engine, error) {
	extra := selfRules(cfg)
	if len(extra) == 0 {
		return rules.Compile(cfg, obs)
	}
	c := *cfg
	c.Rules = append(slices.Clone(cfg.Rules), extra...)
	return rules.Compile(&c, obs)
}

// selfCheckEvery is how often the self-check readings are taken: often
// enough for a threshold of a few seconds, rare enough to cost nothing.
func selfCheckEvery(cfg *config.Config) time.Duration {
	sa := cfg.SelfAlerts
	return min(5*time.Second, max(sa.SourceDownAfter.D()/4, 250*time.Millisecond), max(sa.MailDelayedAfter.D()/4, 250*time.Millisecond))
}

// runSelfCheck feeds the built-in rules until ctx ends.
func (a *App) runSelfCheck(ctx context.Context, srcs sources, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	away := map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := a.now()
		for _, s := range srcs {
			down := 0.0
			if s.ready() {
				delete(away, s.name)
			} else {
				if away[s.name].IsZero() {
					away[s.name] = now
				}
				down = now.Sub(away[s.name]).Seconds()
			}
			a.selfReading(selfTopic+"source/"+s.name, fmt.Sprintf(`{"down_seconds": %.0f}`, down), now)
		}
		if st, err := a.outbox.Stats(); err == nil {
			late := 0.0
			if !st.Oldest.IsZero() {
				late = now.Sub(st.Oldest).Seconds()
			}
			a.selfReading(selfTopic+"outbox", fmt.Sprintf(`{"oldest_pending_seconds": %.0f}`, late), now)
		}
	}
}

func (a *App) selfReading(topic, payload string, now time.Time) {
	ev := &event.Event{Source: "self", Topic: topic, Payload: []byte(payload), Received: now}
	if err := a.eng.Handle(ev); err != nil {
		a.log.Debug("self check", "topic", topic, "err", err)
	}
}
