package app

import (
	"errors"
	"fmt"
	"strings"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/rules"
)

// Reload re-reads the configuration file (SIGHUP, alertd reload). The new
// file is checked exactly as alertd check does; a file with mistakes, or
// one that changes what a reload cannot apply, is refused whole and the
// running configuration stays in force. Otherwise the new rules take
// over at once: unchanged rules keep their series (a firing alert stays
// firing, with its thread, cooldown and rate window), changed rules apply
// from their next reading, removed rules' alerts are forgotten quietly,
// added rules work at once, and the MQTT subscriptions follow the rules.
func (a *App) Reload() (httpapi.ReloadReport, error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	var rep httpapi.ReloadReport
	select {
	case <-a.started:
	default:
		return rep, errors.New("alertd is still starting: try again in a moment")
	}
	cn := a.cluster.Load()
	if clustered(a.cfg) && cn == nil {
		return rep, errors.New("alertd is not connected to NATS yet: try again in a moment")
	}
	cfg, eng, err := a.loadForReload()
	if err != nil {
		rep.Errors = errorLines(err)
		for _, line := range rep.Errors {
			a.log.Error("reload refused; the running configuration stays in force", "error", line)
		}
		a.metrics.ConfigReloads.WithLabelValues("error").Inc()
		a.metrics.ConfigLastReloadOK.Set(0)
		return rep, err
	}
	rep.Added, rep.Removed, rep.Changed = config.RuleChanges(a.cfg, cfg)
	rep.Rules = len(eng.Rules())
	if cn != nil {
		forgotten, err := cn.reload(cfg, rep.Removed)
		if err != nil {
			rep.Errors = errorLines(err)
			a.log.Error("reload refused; the running configuration stays in force", "error", err)
			a.metrics.ConfigReloads.WithLabelValues("error").Inc()
			a.metrics.ConfigLastReloadOK.Set(0)
			return rep, err
		}
		a.reloaded(cfg, eng, rep, forgotten)
		return rep, nil
	}
	forgotten := a.tracker.Reload(eng, seriesBudgets(cfg))
	a.eng.SwapRules(eng)
	a.notify.ForgetRules(rep.Removed)
	if err := alerts.ForgetRules(a.db, rep.Removed); err != nil {
		a.log.Error("reload: forget the stored alerts of removed rules (a restart forgets them too)", "err", err)
	}
	if a.sub != nil {
		if err := a.sub.SetFilters(eng.Filters()); err != nil {
			// The connection will resubscribe the new set when it comes back.
			a.log.Warn("reload: mqtt subscriptions not changed yet", "err", err)
		}
	}
	a.reloaded(cfg, eng, rep, forgotten)
	return rep, nil
}

// reloaded puts cfg in force once its rules are, and says so.
func (a *App) reloaded(cfg *config.Config, eng *rules.Engine, rep httpapi.ReloadReport, forgotten int) {
	if a.LogLevel != nil {
		_ = a.LogLevel.UnmarshalText([]byte(cfg.Log.Level))
	}
	a.cfgMu.Lock()
	a.cfg, a.engine = cfg, eng
	a.cfgMu.Unlock()
	a.metrics.ConfigReloads.WithLabelValues("success").Inc()
	a.metrics.ConfigLastReloadOK.Set(1)
	a.metrics.ConfigLastReloadAt.SetToCurrentTime()
	a.log.Info("configuration reloaded", "rules", rep.Rules, "added", rep.Added, "removed", rep.Removed,
		"changed", rep.Changed, "alerts_forgotten", forgotten)
}

// loadForReload checks the file as alertd check does and compiles its rules.
func (a *App) loadForReload() (*config.Config, *rules.Engine, error) {
	cfg, err := Check(a.cfg.File)
	if err != nil {
		return nil, nil, err
	}
	if errs := config.Unreloadable(a.cfg, cfg); len(errs) > 0 {
		return nil, nil, errs
	}
	eng, err := compile(cfg, invalidPayloads{a.metrics, a.log})
	if err != nil {
		return nil, nil, err
	}
	return cfg, eng, nil
}

// ruleNames is the rules in force, for validating silences.
func (a *App) ruleNames() []string {
	a.cfgMu.Lock()
	defer a.cfgMu.Unlock()
	return ruleNames(a.cfg)
}

// errorLines is err as the lines alertd check would print.
func errorLines(err error) []string {
	var errs config.Errors
	if errors.As(err, &errs) {
		lines := make([]string, len(errs))
		for i, e := range errs {
			lines[i] = e.Error()
		}
		return lines
	}
	return []string{strings.TrimSpace(fmt.Sprint(err))}
}

var _ httpapi.Reloader = (*App)(nil)
