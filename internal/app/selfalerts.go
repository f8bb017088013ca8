package app

import (
	"slices"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/selfcheck"
)

// compile builds the rules of cfg with its self alerts' built-in rules.
func compile(cfg *config.Config, obs rules.Observer) (*rules.Engine, error) {
	extra := selfcheck.Rules(cfg)
	if len(extra) == 0 {
		return rules.Compile(cfg, obs)
	}
	c := *cfg
	c.Rules = append(slices.Clone(cfg.Rules), extra...)
	return rules.Compile(&c, obs)
}

// selfCheck is the self-alert source over srcs and the outbox; nil when
// self alerts are off.
func (a *App) selfCheck(srcs sources) *selfcheck.Source {
	if len(selfcheck.Rules(a.cfg)) == 0 {
		return nil
	}
	probes := make([]selfcheck.Probe, len(srcs))
	for i, s := range srcs {
		probes[i] = selfcheck.Probe{Name: s.name, Ready: s.ready}
	}
	return &selfcheck.Source{
		Probes: probes, Handler: a.eng, Every: selfcheck.Every(a.cfg), Now: a.now,
		Oldest:  func() (time.Time, error) { st, err := a.outbox.Stats(); return st.Oldest, err },
		OnError: func(topic string, err error) { a.log.Debug("self check", "topic", topic, "err", err) },
	}
}
