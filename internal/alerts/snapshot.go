package alerts

import (
	"cmp"
	"slices"
)

// Active returns a copy of every series that is pending or firing, for the
// status page: newest problem first, then by rule and topic, so a page
// refreshed every few seconds keeps its rows in place. Silence series that
// are ok (a last-seen time and nothing more) are left out.
//
// It takes the tracker's lock for one pass over the table and allocates
// only for the series it returns, which are few unless something is
// badly wrong.
func (t *Tracker) Active() []Series {
	t.mu.Lock()
	var out []Series
	for _, s := range t.series {
		if s.State == OK {
			continue
		}
		c := *s
		c.b = book{} // the tracker's bookkeeping is not the caller's
		out = append(out, c)
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Series) int {
		if c := b.Since.Compare(a.Since); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Rule.Name, b.Rule.Name), cmp.Compare(a.Topic, b.Topic))
	})
	return out
}
