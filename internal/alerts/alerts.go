// Package alerts owns the life of each series (one rule on one concrete
// topic): ok → pending → firing → ok. It turns readings and the passing of
// time into Transitions — fire, remind, resolve — and keeps the timers for
// for:, repeat: and silent_for: in one heap, not a timer per series.
//
// The tracker decides in memory. The caller persists a transition (with
// Commit, in the same bbolt transaction as the mail it causes) and, if
// that fails, undoes it with Abort so the redelivered message decides
// again. What a restart must not forget — that a series is firing, that
// its mail went out, the thread it belongs to, that a breach began and
// for: holds it pending — is in bbolt: a restarted alertd, or the new
// owner of a partition, fires a pending alert when its for: ends, as the
// one before would have.
//
// The table of series is bounded (see table.go): each rule has a budget
// and all rules together a global limit, and a new series over either
// takes the place of the quietest silence series that is ok, never of one
// firing, pending or being saved. Silence rules' last-seen times reach the
// store by Checkpoint, in small transactions (see checkpoint.go).
package alerts

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

// State is where a series is in its life.
type State uint8

const (
	OK State = iota
	Pending
	Firing
)

func (s State) String() string {
	return [...]string{"ok", "pending", "firing"}[s]
}

// Kind is what a transition asks for.
type Kind uint8

const (
	Fire    Kind = iota + 1 // the series started firing: first mail
	Remind                  // still firing after repeat, or a held-back first mail may go now
	Resolve                 // a firing series cleared
	Pend                    // a breach began that for: holds pending: no mail, only its start kept
	Cancel                  // a pending series cleared before for: ended: no mail
)

func (k Kind) String() string {
	return [...]string{"", "fire", "remind", "resolve", "pend", "cancel"}[k]
}

// Mails reports whether a transition of kind k may cause a mail: not Pend
// and Cancel, which only keep the series' state.
func (k Kind) Mails() bool { return k == Fire || k == Remind || k == Resolve }

// Series is the state of one rule on one topic.
type Series struct {
	Rule  *rules.Rule
	Topic string
	State State
	// Since is when the problem began (first breaching reading; for a
	// silence, the last reading).
	Since time.Time
	// LastSeen is the last reading on the topic.
	LastSeen time.Time
	// LastMail is when the last firing or reminder mail was queued.
	LastMail time.Time
	// Notified: a firing mail of this episode went out, so its resolution
	// is worth a mail too.
	Notified bool
	// Thread is the Message-ID of the episode's first mail; later mails
	// of the episode reply to it.
	Thread string
	// ThreadSubject is that first mail's subject: later mails reuse it,
	// so mail clients that thread by subject keep the episode together.
	ThreadSubject string
	// The last reading, shown in mails sent by a timer.
	Value   rules.Value
	Payload string
	// source is the ingress of the last reading ("" until one after a
	// start): silence is not counted while it is away.
	source string

	// RetryAt is when a first mail held back by the cooldown may go.
	RetryAt time.Time
	// HeldBySilence: the first mail waiting for RetryAt was held by a
	// silence (not the cooldown), so a silence removed meanwhile releases
	// it.
	HeldBySilence bool

	// busy: a transition of this series is being persisted. No other
	// transition of it is decided until Settle or Abort, so a timer and a
	// reading cannot commit two contradicting ones out of order.
	busy bool
	// b is the tracker's bookkeeping: where the series sits in the timer
	// heap, the eviction lists and the checkpoint's dirty list. It is not
	// state a transition changes, so Abort keeps it.
	b book
}

// book is a series' place in the tracker's structures.
type book struct {
	tab     *ruleTable
	links   [nLinks]link // in its rule's and the global eviction lists, and the dirty list
	listed  int8         // which eviction lists hold it: unlisted, onceList or moreList
	seen    uint8        // readings, counted up to 2: once-seen series are evicted first
	timerAt time.Time    // when its heap entry pops, zero if it has none
	heapAt  int          // its index in the timer heap plus one, 0 if none
	dirty   bool         // LastSeen changed since the last checkpoint
	stored  bool         // the store may hold it: evicting it must delete it there too
	retired bool         // its rule was removed by a reload: forget it when its transition ends
	// restored: pending as loaded from the store, no reading since. Its
	// for: may have ended while alertd was down; it fires no earlier than
	// RestoreGrace after its source is heard again, so that the readings
	// queued meanwhile (a persistent session, the stream's backlog) come
	// first and may clear it.
	restored bool
	idle     chan struct{} // closed when its transition ends; made only when a reading waits
}

// ErrBusy means the series has a transition being persisted: try the
// reading again in a moment.
var ErrBusy = errors.New("alert state of this series is being saved")

// ErrTooManySeries means the reading would start a new series beyond its
// rule's budget or the global limit and no series could make room: a
// client publishing on endless random topics must not grow memory without
// bound.
var ErrTooManySeries = errors.New("too many series tracked")

// Transition is one decision of the tracker.
type Transition struct {
	Kind         Kind
	Notification rules.Notification
	// Snapshot is the series right after the transition, to persist.
	Snapshot Series
	// Thread is the Message-ID earlier mails of the episode replied to
	// (empty for a first mail); Notified says whether a firing mail of the
	// episode went out, which a Resolve needs to be mailed.
	Thread        string
	ThreadSubject string // the first mail's subject
	Notified      bool
	series        *Series // owned by the tracker, guarded by its lock
	prev          Series
}

// Options configure a Tracker.
type Options struct {
	// Start is when the service started: silence is counted from it.
	Start time.Time
	// MaxSeries bounds the series of all rules together
	// (limits.max_series; 0: config.DefaultMaxSeries).
	MaxSeries int
	// Budgets bounds each rule's series, by rule name (its max_series).
	// A rule not listed may use up to MaxSeries.
	Budgets map[string]int
	// Now is the clock of the limit warnings (default time.Now).
	Now func() time.Time
	// OnQuarantine is told of each stored series Load could not read and
	// moved to quarantine.
	OnQuarantine func(store.Quarantined)
	// Batch is how many series a checkpoint (or Load's removal of stale
	// series) writes per transaction (0: CheckpointBatch). Each is up to
	// two keys: a replicated store (store.MaxReplicaWrites) needs fewer.
	Batch int
	// KeepUnknownRules makes Load leave in the store the series of rules
	// it does not know, instead of deleting them: the cluster mode, where
	// a partition may open on an instance still on an older rule file
	// during a rolling reload (a reload's ForgetRules deletes a removed
	// rule's series).
	KeepUnknownRules bool
	// Warn hears, at most once per rule per WarnEvery, that a rule's new
	// series met a limit. It is never called under the tracker's lock.
	Warn func(Warning)
}

// Tracker holds every series. Safe for concurrent use.
type Tracker struct {
	mu     sync.Mutex
	series map[key]*Series
	timers timerHeap
	// epoch is when silence counting started: the service start. Before
	// it, no device is silent. A source that was away restarts the count
	// for its series when it is back (epochs); while it is away (away),
	// its devices are not silent: alertd cannot hear them.
	epoch  time.Time
	epochs map[string]time.Time
	away   map[string]bool
	wake   chan struct{}

	max    int // limits.max_series
	tables map[string]*ruleTable
	// evictable holds every rule's evictable series, once-seen and the
	// others, least recently seen first: the candidates at the global limit.
	evictable [2]seriesList
	now       func() time.Time
	warn      func(Warning)

	// dirty lists the silence series whose last-seen time the store does
	// not have yet, in the order they changed; deletes are evicted series
	// the store may still hold.
	dirty       seriesList
	ndirty      int
	deletes     []key
	ckMu        sync.Mutex // one checkpoint at a time
	batch       int        // keys per checkpoint transaction
	keepUnknown bool       // Options.KeepUnknownRules

	rules *rules.Engine // the rules in force (Reload); nil: whatever readings carry

	onQuarantine func(store.Quarantined)
}

type key struct{ rule, topic string }

// New returns an empty tracker.
func New(o Options) *Tracker {
	t := &Tracker{
		series: map[key]*Series{}, epoch: o.Start, epochs: map[string]time.Time{}, away: map[string]bool{}, wake: make(chan struct{}, 1),
		max: o.MaxSeries, tables: map[string]*ruleTable{}, now: o.Now, warn: o.Warn, onQuarantine: o.OnQuarantine,
		evictable: [2]seriesList{{by: globalLink}, {by: globalLink}}, dirty: seriesList{by: dirtyLink},
		batch: cmp.Or(o.Batch, CheckpointBatch), keepUnknown: o.KeepUnknownRules,
	}
	if t.max <= 0 {
		t.max = config.DefaultMaxSeries
	}
	if t.now == nil {
		t.now = time.Now
	}
	for name, budget := range o.Budgets {
		t.tables[name] = newRuleTable(name, budget, t.max)
	}
	return t
}

// Wake is signalled when a new timer may be earlier than the last Next.
func (t *Tracker) Wake() <-chan struct{} { return t.wake }

// Observe applies one reading. It returns a transition when the reading
// changes what should be mailed.
//
// Every transition returned must be ended with Settle (persisted) or Abort
// (not persisted); until then the series answers ErrBusy.
func (t *Tracker) Observe(rd *rules.Reading) (Transition, bool, error) {
	tr, ok, w, err := t.observe(rd)
	if w != nil && t.warn != nil {
		t.warn(*w)
	}
	return tr, ok, err
}

// ObserveQuiet applies rds, all of one event, only if none of them can
// make a transition or create a series, and says whether it did: a normal
// reading of a series that is ok, a reading of a firing series that does
// not clear it (a storm: only its value changes), or a device showing it
// is alive to a silence rule's series that is not firing. The readings
// are then done, under one lock, with nothing to commit; otherwise
// nothing is applied and each goes through Observe. Readings with Err are
// skipped.
func (t *Tracker) ObserveQuiet(rds []rules.Reading) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	apply := false
	var buf [16]*Series // each reading's series, looked up once
	found := buf[:0]
	for i := range rds {
		rd := &rds[i]
		if rd.Err != nil {
			found = append(found, nil)
			continue
		}
		r := rd.Rule
		if t.current(r) != r {
			return false // a reload's rules, or a rule removed: Observe sorts it out
		}
		s := t.series[key{r.Name, rd.Event.Topic}]
		found = append(found, s)
		switch {
		case s != nil && s.busy:
			return false
		case r.Silence():
			if s == nil || s.State == Firing {
				return false
			}
			apply = true
		case s != nil && s.State == Firing:
			if rd.Clear {
				return false
			}
			apply = true
		case rd.Breach || (s != nil && s.State != OK):
			return false
		}
	}
	if !apply {
		return true
	}
	var payload string // kept once for every series of the reading
	for i := range rds {
		s, rd := found[i], &rds[i]
		switch {
		case s == nil:
		case rd.Rule.Silence():
			t.decide(s, rd) // no transition, as checked above
			t.relist(s)
		case s.State == Firing:
			// What decide does to a firing series' reading that does
			// not clear it, without the copy it keeps for a transition.
			s.LastSeen = rd.Event.Received
			if rd.Event.Source != "" {
				s.source = rd.Event.Source
			}
			s.Value = rd.Value.Short()
			if p := rd.Event.Payload; s.Payload == string(p) {
				continue // the same payload again: nothing to copy
			}
			if payload == "" {
				payload = keptPayload(rd.Event.Payload)
			}
			s.Payload = payload
		}
	}
	return true
}

func (t *Tracker) observe(rd *rules.Reading) (Transition, bool, *Warning, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.current(rd.Rule)
	switch {
	case r == nil:
		return Transition{}, false, nil, nil // its rule was removed meanwhile
	case r != rd.Rule:
		// Evaluated by the rules in force before a reload: applied to the
		// series as their current rule.
		cur := *rd
		cur.Rule = r
		rd = &cur
	}
	k := key{r.Name, rd.Event.Topic}
	s := t.series[k]
	if !r.Silence() && !rd.Breach && (s == nil || (s.State == OK && !s.busy)) {
		// The common case, a normal reading of a series that is ok: no
		// state to create or change.
		return Transition{}, false, nil, nil
	}
	if s != nil && s.busy {
		return Transition{}, false, nil, ErrBusy
	}
	var w *Warning
	if s == nil {
		var err error
		if s, w, err = t.add(r, rd.Event.Topic); err != nil {
			return Transition{}, false, w, err
		}
	}
	tr, ok := t.decide(s, rd)
	if ok {
		s.busy = true
	}
	switch {
	case s.State == OK && !r.Silence() && !s.busy:
		// Back to ok without a transition (a pending for: cancelled):
		// nothing to remember.
		t.remove(s)
	case r.Silence():
		t.relist(s) // seen again: the most recently seen of its list
	}
	return tr, ok, w, nil
}

// decide applies the reading rd to its series s.
func (t *Tracker) decide(s *Series, rd *rules.Reading) (Transition, bool) {
	now := rd.Event.Received
	r := rd.Rule
	prev := *s
	s.LastSeen = now
	s.b.restored = false // judged by this reading from now on
	if rd.Event.Source != "" {
		s.source = rd.Event.Source
	}
	if r.Silence() {
		s.b.seen = min(s.b.seen+1, 2)
		t.markDirty(s)
		t.schedule(s)
		if s.State == Firing {
			return t.resolve(s, prev, now), true
		}
		return Transition{}, false
	}
	s.Value, s.Payload = rd.Value.Short(), keptPayload(rd.Event.Payload)
	switch s.State {
	case OK:
		if !rd.Breach {
			return Transition{}, false
		}
		s.Since = now
		if r.For > 0 {
			s.State = Pending
			t.schedule(s)
			return t.quiet(Pend, s, prev, now), true
		}
		return t.fire(s, prev, now), true
	case Pending:
		if !rd.Breach {
			s.State = OK
			s.Since = time.Time{}
			t.schedule(s)
			return t.quiet(Cancel, s, prev, now), true
		}
		if now.Sub(s.Since) >= r.For {
			return t.fire(s, prev, now), true
		}
	case Firing:
		if rd.Clear {
			return t.resolve(s, prev, now), true
		}
	}
	return Transition{}, false
}

// Due returns the transitions whose time has come: for: elapsed, a
// reminder, a held-back first mail, a series gone silent.
func (t *Tracker) Due(now time.Time) []Transition {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Transition
	for len(t.timers) > 0 && !t.timers[0].b.timerAt.After(now) {
		s := heap.Pop(&t.timers).(*Series)
		s.b.timerAt = time.Time{}
		if s.busy {
			// Being saved: look again shortly.
			s.b.timerAt = now.Add(20 * time.Millisecond)
			heap.Push(&t.timers, s)
			continue
		}
		due := t.due(s)
		if due.IsZero() {
			continue
		}
		if due.After(now) {
			t.schedule(s) // a reading moved it later
			continue
		}
		prev := *s
		r := s.Rule
		switch {
		case s.State == Pending:
			out = append(out, t.fire(s, prev, now))
		case s.State == Firing:
			tr := t.transition(Remind, s, prev, now)
			tr.Notification.Reminder = s.Notified
			s.LastMail = now // tentatively; the gate may hold it back
			s.RetryAt = time.Time{}
			t.schedule(s)
			tr.Snapshot = *s
			out = append(out, tr)
		case r.Silence() && s.State == OK:
			s.Since = s.LastSeen
			out = append(out, t.fire(s, prev, now))
		}
	}
	for i := range out {
		out[i].series.busy = true
		t.relist(out[i].series) // firing and busy: not evictable
	}
	return out
}

// release ends a series' transition and wakes the readings waiting for it.
func (t *Tracker) release(s *Series) {
	s.busy = false
	if s.b.idle != nil {
		close(s.b.idle)
		s.b.idle = nil
	}
}

// ObserveWait is Observe that, when the series has a transition being
// saved (a timer's, or another reading's), waits for it to end and tries
// again, instead of returning ErrBusy: one reading's alert is never
// decided on a state about to change. It returns ErrBusy only when ctx
// ends first.
func (t *Tracker) ObserveWait(ctx context.Context, rd *rules.Reading) (Transition, bool, error) {
	for {
		tr, ok, err := t.Observe(rd)
		if !errors.Is(err, ErrBusy) {
			return tr, ok, err
		}
		wait := t.idleOf(rd.Rule.Name, rd.Event.Topic)
		if wait == nil {
			continue // ended meanwhile
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return Transition{}, false, ErrBusy
		}
	}
}

// idleOf is a channel closed when the series' transition ends, nil when it
// has none.
func (t *Tracker) idleOf(rule, topic string) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.series[key{rule, topic}]
	if s == nil || !s.busy {
		return nil
	}
	if s.b.idle == nil {
		s.b.idle = make(chan struct{})
	}
	return s.b.idle
}

// Settle ends a transition that was persisted.
func (t *Tracker) Settle(tr Transition) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := tr.series
	t.release(s)
	s.b.stored = true
	if s.b.retired {
		t.remove(s)
		return
	}
	if s.State == OK && !s.Rule.Silence() {
		// An ok threshold series has nothing to remember: forget it, so
		// memory follows the alerts, not every topic ever seen.
		t.remove(s)
		return
	}
	t.relist(s)
}

// Next is when Due next has something to do; zero if nothing is scheduled.
func (t *Tracker) Next() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.timers) == 0 {
		return time.Time{}
	}
	return t.timers[0].b.timerAt
}

// Abort undoes a transition whose persistence failed.
func (t *Tracker) Abort(tr Transition) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := tr.series
	b := s.b
	*s = tr.prev
	s.b = b
	t.release(s)
	if s.b.retired {
		t.remove(s)
		return
	}
	s.Rule = t.current(s.Rule) // the transition may predate a reload
	if s.State == OK && !s.Rule.Silence() {
		t.remove(s) // the redelivered reading starts it again
		return
	}
	t.schedule(s)
	t.relist(s)
}

// Mailed records the outcome of a Fire or Remind at the gate: sent says
// whether its mail was queued, thread is the first mail's Message-ID, and
// retryAt (when held back by the cooldown) is when to try again.
func (t *Tracker) Mailed(tr Transition, sent bool, thread, subject string, retryAt time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := tr.series
	s.mailed(sent, thread, subject, tr.Notification.At, retryAt)
	t.schedule(s)
}

// mailed applies the outcome of a firing or reminder mail to s (the live
// series, or the record persisted with the mail).
func (s *Series) mailed(sent bool, msgID, subject string, at, retryAt time.Time) {
	if s.State != Firing {
		return // resolved meanwhile
	}
	if sent {
		s.Notified = true
		if s.Thread == "" {
			s.Thread, s.ThreadSubject = msgID, subject
		}
		s.LastMail = at
		s.RetryAt = time.Time{}
		s.HeldBySilence = false
	} else if !s.Notified {
		s.RetryAt = retryAt
		s.HeldBySilence = false // the caller says when a silence held it (HeldBySilence)
	}
}

// HeldBySilence records that tr's first mail, held back, was held by a
// silence: the one a removal of that silence releases.
func (t *Tracker) HeldBySilence(tr Transition) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := tr.series; s.State == Firing && !s.Notified {
		s.HeldBySilence = true
	}
}

// RetryHeld makes the held-back first mails of rule due now (a silence
// that held them was removed early).
func (t *Tracker) RetryHeld(rule string, now time.Time) {
	t.RetryHeldIf(func(r, _ string) bool { return r == rule }, now)
}

// RetryHeldIf is RetryHeld for the series held by a silence for which
// retry(rule, topic) says so: at start, those that no silence covers any
// more (one removed while this alertd, or this partition's owner, was not
// running is not heard of). Mails held by the cooldown are left alone.
func (t *Tracker) RetryHeldIf(retry func(rule, topic string) bool, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.series {
		if s.State == Firing && !s.Notified && s.HeldBySilence && s.RetryAt.After(now) && retry(s.Rule.Name, s.Topic) {
			s.RetryAt = now
			t.schedule(s)
		}
	}
}

// Disconnected pauses silence detection for the series heard through
// source ("mqtt", "smtp", "http"): while alertd cannot hear a source, none
// of its devices is silent. Series whose source is not known yet (loaded
// from the store, not heard since the start) pause while any source is
// away.
func (t *Tracker) Disconnected(source string) {
	t.mu.Lock()
	t.away[source] = true
	t.mu.Unlock()
}

// Connected resumes silence detection for source's series, counting
// silence afresh from now: a monitor's own outage must not page about
// every device.
func (t *Tracker) Connected(source string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.away[source] {
		return
	}
	delete(t.away, source)
	if now.After(t.epochs[source]) {
		t.epochs[source] = now
	}
	for _, s := range t.series {
		if (s.Rule.Silence() || s.b.restored) && (s.source == source || s.source == "") {
			t.schedule(s)
		}
	}
}

// RestoreGrace is how long after its source is heard again (or the
// tracker started) a pending series loaded from the store waits before
// its for: may fire it.
const RestoreGrace = 5 * time.Second

// hearing reports whether silence is counted for a series heard through
// source, and from when at the earliest.
func (t *Tracker) hearing(source string) (bool, time.Time) {
	from := t.epoch
	if source != "" {
		if t.epochs[source].After(from) {
			from = t.epochs[source]
		}
		return !t.away[source], from
	}
	for _, e := range t.epochs {
		if e.After(from) {
			from = e
		}
	}
	return len(t.away) == 0, from
}

// quiet is a transition of kind Pend or Cancel: the series' new state to
// keep, no mail.
func (t *Tracker) quiet(k Kind, s *Series, prev Series, now time.Time) Transition {
	tr := t.transition(k, s, prev, now)
	tr.Notification.State = s.State.String()
	tr.Snapshot = *s
	return tr
}

func (t *Tracker) fire(s *Series, prev Series, now time.Time) Transition {
	s.State = Firing
	s.Notified = false
	s.Thread, s.ThreadSubject = "", ""
	s.RetryAt = time.Time{}
	if s.Since.IsZero() {
		s.Since = now
	}
	tr := t.transition(Fire, s, prev, now)
	t.schedule(s)
	tr.Snapshot = *s
	return tr
}

func (t *Tracker) resolve(s *Series, prev Series, now time.Time) Transition {
	tr := t.transition(Resolve, s, prev, now)
	tr.Notification.State = rules.StateResolved
	s.State = OK
	s.Since = time.Time{}
	s.RetryAt = time.Time{}
	s.Notified = false
	s.Thread, s.ThreadSubject = "", ""
	if !s.Rule.Silence() {
		s.Value, s.Payload = rules.Value{}, "" // the mail has its copy
	}
	t.schedule(s)
	tr.Snapshot = *s
	return tr
}

func (t *Tracker) transition(k Kind, s *Series, prev Series, now time.Time) Transition {
	return Transition{Kind: k, series: s, prev: prev, Thread: s.Thread, ThreadSubject: s.ThreadSubject, Notified: s.Notified, Notification: rules.Notification{
		Rule: s.Rule, Series: s.Topic, State: rules.StateFiring,
		Since: s.Since, At: now, Value: s.Value, Payload: s.Payload, LastSeen: s.LastSeen,
	}}
}

// due is when the series next needs the timer, zero for never.
func (t *Tracker) due(s *Series) time.Time {
	r := s.Rule
	switch s.State {
	case Pending:
		at := s.Since.Add(r.For)
		if s.b.restored {
			hearing, epoch := t.hearing(s.source)
			if !hearing {
				return time.Time{} // its source is away: wait for it
			}
			if g := epoch.Add(RestoreGrace); g.After(at) {
				at = g
			}
		}
		return at
	case Firing:
		var next time.Time
		if !s.RetryAt.IsZero() && !s.Notified {
			next = s.RetryAt
		}
		if r.Repeat > 0 && s.Notified {
			if rep := s.LastMail.Add(r.Repeat); next.IsZero() || rep.Before(next) {
				next = rep
			}
		}
		return next
	case OK:
		if r.Silence() && !s.LastSeen.IsZero() {
			hearing, epoch := t.hearing(s.source)
			if !hearing {
				return time.Time{}
			}
			from := s.LastSeen
			if epoch.After(from) {
				from = epoch
			}
			return from.Add(r.SilentFor)
		}
	}
	return time.Time{}
}

// maxPayloadKept bounds the payload each non-ok series keeps for the mails
// a timer sends.
const maxPayloadKept = 512

func keptPayload(p []byte) string {
	if len(p) > maxPayloadKept {
		p = p[:maxPayloadKept]
	}
	return rules.ShownPayload(p)
}
