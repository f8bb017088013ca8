// Package rules turns events into readings. It owns the compiled form
// of the configured rules: a topic index over their MQTT filters, the value
// each rule reads from a payload, its condition, and its mail templates
// (parsed and dry-run at load, so a template error is a config error).
//
// rules knows nothing of MQTT clients, mail, storage or alert state: it is
// given an event.Event and returns one Reading per rule that watches its
// topic (does the condition hold? is it clear by the hysteresis margin?),
// and reports payloads it could not use to an Observer. The alert state
// machine (package alerts) turns readings into firing and resolved
// Notifications.
package rules

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/template"
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

	For            time.Duration  // the condition must hold this long to fire
	NotifyResolved bool           // mail when a firing alert clears
	Thread         bool           // later mails of an episode take its first mail's subject
	Location       *time.Location // the zone times in mails are shown in
	Repeat         time.Duration  // remind while firing; 0: never
	SilentFor      time.Duration  // >0: a silence rule
	GroupWait      time.Duration  // >0: notifications are bundled into one mail per window

	order int // position in the file, for a stable notification order
	path  []string
	field string // the path as written, to share one lookup among the rules that read it
	cond  condition
	when  *whenCond // a when: expression instead of cond
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
	rules  []*Rule
	byName map[string]*Rule
	index  index
	obs    Observer
}

// Compile builds the engine from a loaded configuration. Problems found
// here (templates that do not parse or do not render) are config.Errors
// positioned at the offending key.
func Compile(cfg *config.Config, obs Observer) (*Engine, error) {
	e := &Engine{obs: obs, byName: map[string]*Rule{}}
	var errs config.Errors
	loc := time.Local
	if cfg.Timezone != "" {
		if l, err := time.LoadLocation(cfg.Timezone); err == nil {
			loc = l // else validation reported it
		}
	}
	parsed := map[string]*template.Template{}
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
			For:       rc.For.D(),
			Repeat:    rc.Repeat.D(),
			SilentFor: rc.SilentFor.D(),
			GroupWait: rc.GroupWait.D(),
			order:     i,
			cond:      newCondition(rc),
		}
		r.NotifyResolved = rc.NotifyResolved == nil || *rc.NotifyResolved
		r.Thread = rc.Thread == nil || *rc.Thread
		r.Location = loc
		if rc.Field != "" {
			r.path, r.field = strings.Split(rc.Field, "."), rc.Field
		}
		if rc.When != "" {
			w, err := compileWhen(rc.When)
			if err != nil {
				msg := err.Error()
				var we *whenError
				if errors.As(err, &we) {
					msg = fmt.Sprintf("%s (line %d, column %d of the expression)", we.msg, we.line, we.col)
				}
				errs.Add(cfg.File, rc.KeyPos(&cfg.Defaults, "when"), "rule %q: when: %s", rc.Name, msg)
				continue
			}
			r.when = w
		}
		var err error
		if r.tmpl, err = parseTemplates(rc, r, parsed); err != nil {
			at := "subject"
			if te, ok := err.(*templateError); ok {
				at = te.key
			}
			errs.Add(cfg.File, rc.KeyPos(&cfg.Defaults, at), "rule %q: %v", rc.Name, err)
			continue
		}
		e.rules = append(e.rules, r)
		e.byName[r.Name] = r
		e.index.add(r.Filter, r)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return e, nil
}

// Silence reports whether r fires on a series that stopped reporting
// rather than on what it reports.
func (r *Rule) Silence() bool { return r.SilentFor > 0 }

// Reading is one event as one rule sees it.
type Reading struct {
	Rule  *Rule
	Event *event.Event
	Value Value
	// Breach: the condition holds. Clear: the value is back inside the
	// threshold by the rule's hysteresis (without hysteresis, !Breach). A
	// silence rule's readings are always Clear: the series is alive.
	Breach, Clear bool
	// Err: the rule could not read the payload (Readings only; Evaluate
	// reports such readings and leaves them out).
	Err error
}

// Rule returns the rule named name, or nil.
func (e *Engine) Rule(name string) *Rule { return e.byName[name] }

// Rules returns the compiled rules in file order.
func (e *Engine) Rules() []*Rule { return e.rules }

// Filters returns the distinct topic filters to subscribe to.
func (e *Engine) Filters() []string {
	var out []string
	for _, r := range e.rules {
		if strings.HasPrefix(r.Filter, "$alertd/") {
			continue // alertd's own readings (internal/selfcheck): never asked of a broker
		}
		if !slices.Contains(out, r.Filter) {
			out = append(out, r.Filter)
		}
	}
	return out
}

// Evaluate appends to dst a Reading for every rule whose filter matches
// ev's topic and which could read its payload, and reports to the
// observer each rule that could not. A topic no rule watches costs one
// trie walk and no allocation.
func (e *Engine) Evaluate(ev *event.Event, dst []Reading) []Reading {
	n := len(dst)
	dst = e.Readings(ev, dst)
	e.Report(dst[n:])
	kept := dst[:n]
	for _, rd := range dst[n:] {
		if rd.Err == nil {
			kept = append(kept, rd)
		}
	}
	return kept
}

// Readings is Evaluate without side effects: the rules that could not
// read the payload are readings too, with Err set, for Report.
func (e *Engine) Readings(ev *event.Event, dst []Reading) []Reading {
	var buf [16]*Rule
	matched := e.index.match(ev.Topic, buf[:0])
	if len(matched) == 0 {
		return dst
	}
	if len(matched) > 1 {
		slices.SortFunc(matched, func(a, b *Rule) int { return a.order - b.order })
		matched = slices.Compact(matched) // overlapping filters of one rule cannot happen, but be safe
	}
	var payloadErr, jsonErr error
	checked, jsonChecked := false, false
	// Rules reading the same field of one payload share its lookup: a
	// fleet's rules often watch the same temp or battery at several
	// thresholds.
	type found struct {
		field string
		v     Value
		err   error
	}
	var seen [4]found
	nseen := 0
	for _, r := range matched {
		if r.Silence() {
			// Any message, even one no rule could parse, shows the device
			// is alive.
			dst = append(dst, Reading{Rule: r, Event: ev, Clear: true})
			continue
		}
		if !checked {
			payloadErr, checked = checkPayload(ev.Payload), true
		}
		if payloadErr != nil {
			dst = append(dst, Reading{Rule: r, Event: ev, Err: payloadErr})
			continue
		}
		if r.when != nil {
			breach, err := r.when.eval(ev.Payload)
			if err != nil {
				dst = append(dst, Reading{Rule: r, Event: ev, Err: err})
				continue
			}
			dst = append(dst, Reading{Rule: r, Event: ev, Value: Value{Text: r.when.src, Kind: KindText}, Breach: breach, Clear: !breach})
			continue
		}
		var v Value
		var err error
		if len(r.path) == 0 {
			v = rawValue(ev.Payload)
		} else {
			if !jsonChecked {
				jsonErr, jsonChecked = checkJSON(ev.Payload), true
			}
			if err = jsonErr; err == nil {
				i := 0
				for i < nseen && seen[i].field != r.field {
					i++
				}
				if i < nseen {
					v, err = seen[i].v, seen[i].err
				} else {
					v, err = field(ev.Payload, r.path)
					if nseen < len(seen) {
						seen[nseen] = found{r.field, v, err}
						nseen++
					}
				}
			}
		}
		if err == nil {
			var breach, clear bool
			if breach, clear, err = r.cond.eval(v); err == nil {
				dst = append(dst, Reading{Rule: r, Event: ev, Value: v, Breach: breach, Clear: clear})
				continue
			}
		}
		dst = append(dst, Reading{Rule: r, Event: ev, Err: err})
	}
	return dst
}

// Report tells the observer of each reading whose rule could not read
// its payload (Err set).
func (e *Engine) Report(rds []Reading) {
	for i := range rds {
		if rd := &rds[i]; rd.Err != nil {
			e.invalid(rd.Rule, rd.Event, rd.Err)
		}
	}
}

func (e *Engine) invalid(r *Rule, ev *event.Event, err error) {
	if e.obs != nil {
		e.obs.InvalidPayload(r.Name, ev.Topic, err)
	}
}
