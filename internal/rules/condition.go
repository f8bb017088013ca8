package rules

import (
	"strconv"

	"github.com/alertd/alertd/internal/config"
)

// condition is a rule's test of a value. Thresholds are strict: above: 30
// fires at 30.1, not at 30. With both above and below it fires outside the
// band [below, above].
//
// Hysteresis moves the point where a firing alert clears: with above: 30
// and hysteresis: 1.5 it clears only below 28.5.
type condition struct {
	above, below     *float64
	hysteresis       float64
	equals, notEqual *config.Scalar
}

func newCondition(r *config.Rule) condition {
	c := condition{above: r.Above, below: r.Below, equals: r.Equals, notEqual: r.NotEquals}
	if r.Hysteresis != nil {
		c.hysteresis = *r.Hysteresis
	}
	return c
}

// eval reports whether v breaches the condition and whether it is clear of
// it by the hysteresis margin.
func (c condition) eval(v Value) (breach, clear bool, err error) {
	switch {
	case c.equals != nil:
		breach = same(*c.equals, v)
		return breach, !breach, nil
	case c.notEqual != nil:
		breach = !same(*c.notEqual, v)
		return breach, !breach, nil
	}
	if !v.IsNum {
		return false, false, ErrNotNumber
	}
	breach = (c.above != nil && v.Num > *c.above) || (c.below != nil && v.Num < *c.below)
	if c.hysteresis == 0 {
		return breach, !breach, nil
	}
	clear = (c.above == nil || v.Num < *c.above-c.hysteresis) && (c.below == nil || v.Num > *c.below+c.hysteresis)
	return breach, clear, nil
}

// same compares as numbers when the configured value was written as a
// number and the payload holds one (so 1 equals 1.0), else as text.
func same(want config.Scalar, v Value) bool {
	if want.IsNum && v.IsNum {
		return want.Num == v.Num
	}
	return want.Text == v.Text
}

// threshold is the limit v crossed, for templates: the above value for a
// high reading, the below value for a low one, the compared text otherwise.
func (c condition) threshold(v Value) string {
	switch {
	case c.equals != nil:
		return c.equals.Text
	case c.notEqual != nil:
		return c.notEqual.Text
	case c.above != nil && v.IsNum && v.Num > *c.above:
		return formatFloat(*c.above)
	case c.below != nil:
		return formatFloat(*c.below)
	case c.above != nil:
		return formatFloat(*c.above)
	}
	return ""
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
