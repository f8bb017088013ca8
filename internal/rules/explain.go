package rules

import "fmt"

// Condition says the rule's test in the configuration's words, for a
// person reading what a dry run decided: "above 30", "outside [5, 30]",
// "equals open", "when: temp > 30", "silent_for 15m0s".
func (r *Rule) Condition() string {
	c := r.cond
	switch {
	case r.Silence():
		return "silent_for " + roundDuration(r.SilentFor)
	case r.when != nil:
		return "when: " + r.when.src
	case c.equals != nil:
		return fmt.Sprintf("equals %q", c.equals.Text)
	case c.notEqual != nil:
		return fmt.Sprintf("not_equals %q", c.notEqual.Text)
	case c.above != nil && c.below != nil:
		return fmt.Sprintf("outside [%s, %s]", formatFloat(*c.below), formatFloat(*c.above))
	case c.above != nil:
		return "above " + formatFloat(*c.above)
	case c.below != nil:
		return "below " + formatFloat(*c.below)
	}
	return "no condition"
}

// Clears says where a firing alert clears when hysteresis moves that
// point ("clears only below 28.5"); "" when it clears as soon as the
// condition no longer holds.
func (r *Rule) Clears() string {
	c := r.cond
	if c.hysteresis == 0 {
		return ""
	}
	switch {
	case c.above != nil && c.below != nil:
		return fmt.Sprintf("clears only inside [%s, %s]", formatFloat(*c.below+c.hysteresis), formatFloat(*c.above-c.hysteresis))
	case c.above != nil:
		return "clears only below " + formatFloat(*c.above-c.hysteresis)
	case c.below != nil:
		return "clears only above " + formatFloat(*c.below+c.hysteresis)
	}
	return ""
}
