package alerts

import (
	"github.com/alertd/alertd/internal/rules"
)

// Reload points every series at the rules of rs, by name, and applies the
// new budgets (max_series by rule name). A series of a rule that is still
// configured keeps its whole state — firing, its thread, its timers — and
// a changed rule is applied from its next reading (its timers are
// rescheduled at once under the new for:, repeat: and silent_for:). The
// series of a removed rule are forgotten quietly: the operator removed the
// rule, and a resolved mail would claim a recovery nobody saw. The caller
// deletes their stored state (ForgetRules). It returns how many series
// were forgotten.
func (t *Tracker) Reload(rs *rules.Engine, budgets map[string]int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rules = rs
	for name, tab := range t.tables {
		if rs.Rule(name) == nil {
			continue
		}
		tab.budget = budgetOf(budgets[name], t.max)
	}
	for name, budget := range budgets {
		if t.tables[name] == nil {
			t.tables[name] = newRuleTable(name, budget, t.max)
		}
	}
	forgotten := 0
	for _, s := range t.series {
		r := rs.Rule(s.Rule.Name)
		switch {
		case r == nil && s.busy:
			s.b.retired = true // forgotten when its transition ends
			forgotten++
		case r == nil:
			t.remove(s)
			forgotten++
		case !r.Silence() && s.State == OK && !s.busy:
			// It was a silence rule's: an ok threshold series has nothing
			// to remember.
			s.Rule = r
			t.remove(s)
		default:
			s.Rule = r
			s.b.tab.filter = r.Filter
			t.unschedule(s) // the new rule may want it sooner or never
			t.schedule(s)
		}
	}
	for name, tab := range t.tables {
		if rs.Rule(name) == nil && tab.count == 0 {
			delete(t.tables, name)
		}
	}
	return forgotten
}

// current returns the configured rule named like r, nil when a reload
// removed it. Readings evaluated by the rules in force before a reload
// carry the old *Rule; the series always hold the current one.
func (t *Tracker) current(r *rules.Rule) *rules.Rule {
	if t.rules == nil {
		return r
	}
	return t.rules.Rule(r.Name)
}

func budgetOf(budget, max int) int {
	if budget <= 0 || budget > max {
		return max
	}
	return budget
}
