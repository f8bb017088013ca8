// Package rules turns events into notifications. It owns the compiled form
// of the configured rules: a topic index over their MQTT filters, the value
// each rule reads from a payload, its condition, and its mail templates
// (parsed and dry-run at load, so a template error is a config error).
//
// rules knows nothing of MQTT clients, mail or storage: it is given an
// event.Event and returns Notifications, and reports payloads it could not
// use to an Observer.
package rules

import (
	"slices"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/event"
)

// Rule is one compiled rule.
type Rule struct {
	Name      string
	Filter    string
	Field     string
	Severity  string
	To        []string
	Cooldown  time.Duration
	RateLimit config.Rate

	order int // position in the file, for a stable notification order
	path  []string
	cond  condition
	tmpl  templates
}

// Observer hears about payloads a rule could not use. It must be cheap and
// safe for concurrent use; the app counts them in a metric.
type Observer interface {
	InvalidPayload(rule string, topic string, err error)
}

// Engine matches events against the rules. It is immutable after Compile
// and safe for concurrent use.
type Engine struct {
	rules []*Rule
	index index
	obs   Observer
}

// Compile builds the engine from a loaded configuration. Problems found
// here (templates that do not parse or do not render) are config.Errors
// positioned at the offending key.
func Compile(cfg *config.Config, obs Observer) (*Engine, error) {
	e := &Engine{obs: obs}
	var errs config.Errors
	for i := range cfg.Rules {
		rc := &cfg.Rules[i]
		r := &Rule{
			Name:      rc.Name,
			Filter:    rc.Topic,
			Field:     rc.Field,
			Severity:  rc.Severity,
			To:        rc.To,
			Cooldown:  rc.Cooldown.D(),
			RateLimit: rc.RateLimit,
			order:     i,
			cond:      newCondition(rc),
		}
		if rc.Field != "" {
			r.path = strings.Split(rc.Field, ".")
		}
		var err error
		if r.tmpl, err = parseTemplates(rc, r); err != nil {
			at := "subject"
			if te, ok := err.(*templateError); ok {
				at = te.key
			}
			errs.Add(cfg.File, rc.KeyPos(&cfg.Defaults, at), "rule %q: %v", rc.Name, err)
			continue
		}
		e.rules = append(e.rules, r)
		e.index.add(r.Filter, r)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return e, nil
}

// Rules returns the compiled rules in file order.
func (e *Engine) Rules() []*Rule { return e.rules }

// Filters returns the distinct topic filters to subscribe to.
func (e *Engine) Filters() []string {
	var out []string
	for _, r := range e.rules {
		if !slices.Contains(out, r.Filter) {
			out = append(out, r.Filter)
		}
	}
	return out
}

// Evaluate appends to dst a Notification for every rule whose filter matches
// ev's topic and whose condition holds for its payload. A topic no rule
// watches costs one trie walk and no allocation.
func (e *Engine) Evaluate(ev *event.Event, dst []Notification) []Notification {
	var buf [8]*Rule
	matched := e.index.match(ev.Topic, buf[:0])
	if len(matched) == 0 {
		return dst
	}
	if len(matched) > 1 {
		slices.SortFunc(matched, func(a, b *Rule) int { return a.order - b.order })
		matched = slices.Compact(matched) // overlapping filters of one rule cannot happen, but be safe
	}
	payloadErr := checkPayload(ev.Payload)
	for _, r := range matched {
		if payloadErr != nil {
			e.invalid(r, ev, payloadErr)
			continue
		}
		v, err := extract(ev.Payload, r.path)
		if err == nil {
			var fired bool
			fired, err = r.cond.eval(v)
			if err == nil && fired {
				dst = append(dst, newNotification(r, ev, v))
			}
		}
		if err != nil {
			e.invalid(r, ev, err)
		}
	}
	return dst
}

func (e *Engine) invalid(r *Rule, ev *event.Event, err error) {
	if e.obs != nil {
		e.obs.InvalidPayload(r.Name, ev.Topic, err)
	}
}
