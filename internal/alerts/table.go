package alerts

import (
	"time"

	"github.com/alertd/alertd/internal/rules"
)

// The table of series is bounded twice, so that memory stays bounded and
// yet a flood of junk topics cannot be used to blind alertd:
//
//   - each rule has a budget (its max_series): junk on one rule's topics
//     never takes the room of another rule's devices;
//   - all rules together have limits.max_series.
//
// A new series over its rule's budget takes the place of that rule's best
// candidate for eviction; over the global limit, of the best candidate of
// any rule. Only a silence series that is ok and not being saved can be
// evicted (it holds only a last-seen time), never one firing or pending:
// that would lose an alert. Candidates seen only once go first, oldest
// first — the mark of a junk topic, which reports once and never again —
// then the others, least recently seen first. When there is no candidate
// the reading's new series is dropped.
//
// Evicted series are deleted from the store by the next checkpoint, or a
// restart would restore the flood; Load applies the same limits.

// WarnEvery is how often a rule that keeps meeting a limit is logged.
const WarnEvery = time.Hour

// Warning says that a rule's new series met a limit: series were evicted
// to make room, or (when nothing could be) the new one was dropped.
type Warning struct {
	// Rule and Filter name the rule and its topic filter; Topic is the new
	// series that met the limit (empty at load).
	Rule, Filter, Topic string
	// Limit names the key that set it: "max_series" for the rule's budget,
	// "limits.max_series" for the global limit; Max is its value.
	Limit string
	Max   int
	// Series is how many series the rule has; Evicted and Dropped count
	// the rule's series evicted and new ones dropped since the start.
	Series           int
	Evicted, Dropped uint64
	// AtLoad: the store held more than the limits allow at start.
	AtLoad bool
}

// ruleTable is one rule's part of the table.
type ruleTable struct {
	rule     string
	filter   string
	budget   int
	count    int
	evicted  uint64
	dropped  uint64
	lists    [2]seriesList // its evictable series: onceList, moreList
	warnedAt time.Time
}

func newRuleTable(rule string, budget, max int) *ruleTable {
	if budget <= 0 || budget > max {
		budget = max
	}
	return &ruleTable{rule: rule, budget: budget, lists: [2]seriesList{{by: ruleLink}, {by: ruleLink}}}
}

// table is r's part of the table, made on first use for a rule that has
// no budget of its own.
func (t *Tracker) table(r *rules.Rule) *ruleTable {
	tab := t.tables[r.Name]
	if tab == nil {
		tab = newRuleTable(r.Name, 0, t.max)
		t.tables[r.Name] = tab
	}
	tab.filter = r.Filter
	return tab
}

// add starts a series for r on topic, making room within the limits.
func (t *Tracker) add(r *rules.Rule, topic string) (*Series, *Warning, error) {
	tab := t.table(r)
	limit, max := "", 0
	for tab.count >= tab.budget || len(t.series) >= t.max {
		var victim *Series
		if tab.count >= tab.budget {
			limit, max, victim = "max_series", tab.budget, tab.victim()
		} else {
			limit, max, victim = "limits.max_series", t.max, t.globalVictim()
		}
		if victim == nil {
			tab.dropped++
			return nil, t.warning(tab, r, topic, limit, max), ErrTooManySeries
		}
		t.evict(victim)
	}
	s := &Series{Rule: r, Topic: topic}
	s.b.tab = tab
	t.series[key{r.Name, topic}] = s
	tab.count++
	var w *Warning
	if limit != "" {
		w = t.warning(tab, r, topic, limit, max)
	}
	return s, w, nil
}

// warning is what to log about tab meeting a limit, nil if it was logged
// less than WarnEvery ago.
func (t *Tracker) warning(tab *ruleTable, r *rules.Rule, topic, limit string, max int) *Warning {
	now := t.now()
	if !tab.warnedAt.IsZero() && now.Sub(tab.warnedAt) < WarnEvery {
		return nil
	}
	tab.warnedAt = now
	return &Warning{Rule: r.Name, Filter: r.Filter, Topic: topic, Limit: limit, Max: max, Series: tab.count, Evicted: tab.evicted, Dropped: tab.dropped}
}

// victim is the rule's best candidate for eviction, nil if none.
func (tab *ruleTable) victim() *Series {
	if s := tab.lists[onceList-1].head; s != nil {
		return s
	}
	return tab.lists[moreList-1].head
}

// globalVictim is the best candidate of any rule, nil if none.
func (t *Tracker) globalVictim() *Series {
	if s := t.evictable[onceList-1].head; s != nil {
		return s
	}
	return t.evictable[moreList-1].head
}

// evictable: a silence series that is ok holds only a last-seen time;
// losing it costs at most that device's next silence alert.
func evictable(s *Series) bool {
	return s.Rule.Silence() && s.State == OK && !s.busy
}

// relist puts s at the back (most recently seen) of the eviction lists it
// belongs on now, or takes it off them when it is not evictable.
func (t *Tracker) relist(s *Series) {
	t.unlist(s)
	if !evictable(s) {
		return
	}
	s.b.listed = moreList
	if s.b.seen <= 1 {
		s.b.listed = onceList
	}
	s.b.tab.lists[s.b.listed-1].push(s)
	t.evictable[s.b.listed-1].push(s)
}

func (t *Tracker) unlist(s *Series) {
	if s.b.listed == unlisted {
		return
	}
	s.b.tab.lists[s.b.listed-1].remove(s)
	t.evictable[s.b.listed-1].remove(s)
	s.b.listed = unlisted
}

// remove forgets s: off the lists, the heap and the dirty list.
func (t *Tracker) remove(s *Series) {
	t.unlist(s)
	t.unschedule(s)
	t.clean(s)
	delete(t.series, key{s.Rule.Name, s.Topic})
	s.b.tab.count--
}

// evict removes s to make room, and has the store forget it too.
func (t *Tracker) evict(s *Series) {
	t.remove(s)
	s.b.tab.evicted++
	if s.b.stored {
		t.deletes = append(t.deletes, key{s.Rule.Name, s.Topic})
	}
}

// Stats calls yield with each rule's series and the series evicted from
// it so far (for alertd_series and alertd_series_evicted_total).
func (t *Tracker) Stats(yield func(rule string, series int, evicted uint64)) {
	type stat struct {
		rule    string
		series  int
		evicted uint64
	}
	t.mu.Lock()
	out := make([]stat, 0, len(t.tables))
	for _, tab := range t.tables {
		out = append(out, stat{tab.rule, tab.count, tab.evicted})
	}
	t.mu.Unlock()
	for _, s := range out {
		yield(s.rule, s.series, s.evicted)
	}
}

// Which eviction lists hold a series.
const (
	unlisted int8 = iota
	onceList      // seen once
	moreList      // seen more than once
)

// Which of a series' links a list uses: a series is on its rule's list
// and the global one of the same kind at once, and maybe the dirty list.
const (
	ruleLink = iota
	globalLink
	dirtyLink
	nLinks
)

type link struct{ prev, next *Series }

// seriesList is an intrusive doubly linked list: O(1) to append, remove
// and take the oldest, with no allocation.
type seriesList struct {
	head, tail *Series
	by         int
}

func (l *seriesList) push(s *Series) {
	ln := &s.b.links[l.by]
	ln.prev, ln.next = l.tail, nil
	if l.tail != nil {
		l.tail.b.links[l.by].next = s
	} else {
		l.head = s
	}
	l.tail = s
}

func (l *seriesList) remove(s *Series) {
	ln := &s.b.links[l.by]
	if ln.prev != nil {
		ln.prev.b.links[l.by].next = ln.next
	} else {
		l.head = ln.next
	}
	if ln.next != nil {
		ln.next.b.links[l.by].prev = ln.prev
	} else {
		l.tail = ln.prev
	}
	ln.prev, ln.next = nil, nil
}
