package alerts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

// record is a series as stored in bbolt.
type record struct {
	State    State     `json:"state"`
	Since    time.Time `json:"since,omitzero"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	LastMail time.Time `json:"last_mail,omitzero"`
	Notified bool      `json:"notified,omitempty"`
	Thread   string    `json:"thread,omitempty"`
	Subject  string    `json:"thread_subject,omitempty"`
	RetryAt  time.Time `json:"retry_at,omitzero"`
	// HeldBySilence is absent in records written before it existed: such
	// a mail held by a silence is released at the silence's end.
	HeldBySilence bool    `json:"held_by_silence,omitempty"`
	Value         string  `json:"value,omitempty"`
	Num           float64 `json:"num,omitempty"`
	IsNum         bool    `json:"is_num,omitempty"`
	Payload       string  `json:"payload,omitempty"`
}

func seriesKey(rule, topic string) []byte {
	k := make([]byte, 0, len(rule)+1+len(topic))
	k = append(append(append(k, rule...), 0), topic...)
	return k
}

// Record returns the series to persist for tr, with the outcome of its
// mail applied: sent says a mail was queued in the same transaction,
// msgID is its Message-ID; retryAt is when a held-back first mail may go.
func (tr *Transition) Record(sent bool, msgID, subject string, retryAt time.Time) Series {
	s := tr.Snapshot
	s.mailed(sent, msgID, subject, tr.Notification.At, retryAt)
	return s
}

// Put writes s in tx. A threshold series back to ok is deleted: only what
// a restart must remember is kept.
func Put(tx *store.Tx, s *Series) error {
	v, err := Encode(s)
	if err != nil {
		return err
	}
	return PutEncoded(tx, s, v)
}

// Encode is the stored form of s, nil when Put deletes it: what a caller
// may compute before the write transaction, which it then does not hold
// up (the store has one writer).
func Encode(s *Series) ([]byte, error) {
	if s.State == OK && !s.Rule.Silence() {
		return nil, nil
	}
	return json.Marshal(record{
		State: s.State, Since: s.Since, LastSeen: s.LastSeen, LastMail: s.LastMail,
		Notified: s.Notified, Thread: s.Thread, Subject: s.ThreadSubject, RetryAt: s.RetryAt, HeldBySilence: s.HeldBySilence,
		Value: s.Value.Text, Num: s.Value.Num, IsNum: s.Value.IsNum, Payload: s.Payload,
	})
}

// PutEncoded is Put of s with v, its Encode.
func PutEncoded(tx *store.Tx, s *Series, v []byte) error {
	b := tx.Bucket(store.BucketAlerts)
	k := seriesKey(s.Rule.Name, s.Topic)
	if v == nil {
		return b.Delete(k)
	}
	return b.Put(k, v)
}

// Load reads the persisted series of the rules in engine and applies the
// limits to them as to new series: a store flooded with junk topics (by a
// version of alertd without budgets, or with budgets set lower since)
// loses its junk at start, not its devices. Series of rules no longer
// configured, and series evicted here, are deleted from the store. It
// returns how many series are tracked.
//
// Call it before anything else uses the tracker.
func (t *Tracker) Load(db *store.DB, engine *rules.Engine) (int, error) {
	var loaded []*Series
	var stale [][]byte
	var bad []unreadable
	if err := db.View(func(tx *store.Tx) error {
		loaded, stale, bad = read(tx, engine, t.keepUnknown)
		return nil
	}); err != nil {
		return 0, fmt.Errorf("load alert state: %w", err)
	}
	if len(bad) > 0 {
		// Kept aside with its bytes, as every store entry that does not
		// decode; the series starts afresh at its next reading.
		if err := db.Update(func(tx *store.Tx) error {
			for _, u := range bad {
				if err := store.Quarantine(tx, u.bucket, u.k, u.v, u.err, t.onQuarantine); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return 0, fmt.Errorf("load alert state: quarantine unreadable series: %w", err)
		}
	}
	warnings := t.restore(loaded)
	for _, w := range warnings {
		if t.warn != nil {
			t.warn(w)
		}
	}
	t.mu.Lock()
	for _, k := range t.deletes {
		stale = append(stale, seriesKey(k.rule, k.topic))
	}
	t.deletes = nil
	n := len(t.series)
	t.mu.Unlock()
	for i := 0; i < len(stale); i += t.batch {
		keys := stale[i:min(i+t.batch, len(stale))]
		if err := db.Update(func(tx *store.Tx) error { return deleteKeys(tx, keys) }); err != nil {
			return 0, fmt.Errorf("load alert state: delete stale series: %w", err)
		}
	}
	return n, nil
}

// read walks the alerts bucket (each series' state) and the last_seen
// bucket (silence series' last readings) side by side: both are keyed
// rule\x00topic, so one ordered pass joins them. A series may be in
// either or both; stores written before last_seen existed have only
// records, whose own last_seen is then what counts.
func read(tx *store.Tx, engine *rules.Engine, keepUnknown bool) (loaded []*Series, stale [][]byte, bad []unreadable) {
	ac := tx.Bucket(store.BucketAlerts).Cursor()
	lc := tx.Bucket(store.BucketLastSeen).Cursor()
	ak, av := ac.First()
	lk, lv := lc.First()
	for ak != nil || lk != nil {
		var k, rec, seen []byte
		switch c := compareKeys(ak, lk); {
		case c < 0:
			k, rec = ak, av
			ak, av = ac.Next()
		case c > 0:
			k, seen = lk, lv
			lk, lv = lc.Next()
		default:
			k, rec, seen = ak, av, lv
			ak, av = ac.Next()
			lk, lv = lc.Next()
		}
		s, err := decode(k, rec, seen, engine)
		switch {
		case err != nil:
			u := unreadable{bucket: store.BucketAlerts, k: bytes.Clone(k), v: bytes.Clone(rec), err: err}
			if rec == nil {
				u.bucket, u.v = store.BucketLastSeen, bytes.Clone(seen)
			}
			bad = append(bad, u)
		case s != nil:
			loaded = append(loaded, s)
		case keepUnknown && !known(k, engine):
			// Another instance's rule file may have it: kept.
		default:
			stale = append(stale, bytes.Clone(k))
		}
	}
	return loaded, stale, bad
}

// known reports whether the series stored under k is of a rule of engine.
func known(k []byte, engine *rules.Engine) bool {
	name, _, _ := bytes.Cut(k, []byte{0})
	return engine.Rule(string(name)) != nil
}

// unreadable is a stored series that does not decode.
type unreadable struct {
	bucket []byte
	k, v   []byte
	err    error
}

// compareKeys orders keys with nil (a cursor at its end) last.
func compareKeys(a, b []byte) int {
	switch {
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

// decode makes the series stored under k from its record and last-seen
// value (either may be nil); nil when it is not worth keeping (its rule
// is gone, or it is an ok threshold series), an error when it cannot be
// read.
func decode(k, rec, seen []byte, engine *rules.Engine) (*Series, error) {
	name, topic, ok := bytes.Cut(k, []byte{0})
	r := engine.Rule(string(name))
	if !ok || r == nil {
		return nil, nil
	}
	s := &Series{Rule: r, Topic: string(topic)}
	s.b.seen = 2 // not known: not taken for a junk topic
	if rec != nil {
		var rc record
		if err := json.Unmarshal(rec, &rc); err != nil {
			return nil, fmt.Errorf("decode alert state: %w", err)
		}
		if rc.State > Firing {
			return nil, fmt.Errorf("decode alert state: no state %d", rc.State)
		}
		if rc.State == OK && !r.Silence() {
			return nil, nil
		}
		if rc.State == Pending && r.Silence() {
			return nil, nil // a rule of that name that no longer has a for:
		}
		s.b.restored = rc.State == Pending
		s.State, s.Since, s.LastSeen, s.LastMail = rc.State, rc.Since, rc.LastSeen, rc.LastMail
		s.Notified, s.Thread, s.ThreadSubject, s.RetryAt = rc.Notified, rc.Thread, rc.Subject, rc.RetryAt
		s.HeldBySilence = rc.HeldBySilence
		s.Value, s.Payload = rules.Value{Text: rc.Value, Num: rc.Num, IsNum: rc.IsNum}, rc.Payload
	} else if !r.Silence() {
		return nil, nil
	}
	if seen != nil {
		last, n, ok := decodeLastSeen(seen)
		if !ok && rec == nil {
			return nil, fmt.Errorf("decode last-seen time: %d bytes, want 9", len(seen))
		}
		if ok && last.After(s.LastSeen) {
			s.LastSeen = last
		}
		if ok && n > 0 {
			s.b.seen = n
		}
	}
	return s, nil
}

// restore adds the loaded series and evicts what exceeds the limits, the
// same way as for new series: the series are added least recently seen
// first, so the eviction lists are in that order.
func (t *Tracker) restore(loaded []*Series) []Warning {
	slices.SortStableFunc(loaded, func(a, b *Series) int { return a.LastSeen.Compare(b.LastSeen) })
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range loaded {
		s.b.tab = t.table(s.Rule)
		s.b.stored = true
		t.series[key{s.Rule.Name, s.Topic}] = s
		s.b.tab.count++
		t.schedule(s)
		t.relist(s)
	}
	limit := map[*ruleTable]string{}
	for _, tab := range t.tables {
		for tab.count > tab.budget {
			v := tab.victim()
			if v == nil {
				break
			}
			t.evict(v)
		}
		if tab.count > tab.budget || tab.evicted > 0 {
			limit[tab] = "max_series"
		}
	}
	for len(t.series) > t.max {
		v := t.globalVictim()
		if v == nil {
			break
		}
		t.evict(v)
		if limit[v.b.tab] == "" {
			limit[v.b.tab] = "limits.max_series"
		}
	}
	var out []Warning
	now := t.now()
	for tab, l := range limit {
		tab.warnedAt = now
		max := tab.budget
		if l == "limits.max_series" {
			max = t.max
		}
		out = append(out, Warning{Rule: tab.rule, Filter: tab.filter, Limit: l, Max: max, Series: tab.count, Evicted: tab.evicted, AtLoad: true})
	}
	slices.SortFunc(out, func(a, b Warning) int { return strings.Compare(a.Rule, b.Rule) })
	return out
}

func deleteKeys(tx *store.Tx, keys [][]byte) error {
	for _, b := range [][]byte{store.BucketAlerts, store.BucketLastSeen} {
		bk := tx.Bucket(b)
		for _, k := range keys {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// Len is the number of series tracked.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.series)
}

// Firing is the number of series firing.
func (t *Tracker) Firing() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, s := range t.series {
		if s.State == Firing {
			n++
		}
	}
	return n
}

// Lookup returns a copy of rule's series on topic, if it is tracked.
func (t *Tracker) Lookup(rule, topic string) (Series, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.series[key{rule, topic}]
	if s == nil {
		return Series{}, false
	}
	return *s, true
}

// ForgetRules deletes the stored series of the named rules (removed by a
// reload), so a restart, or the same rule added back later, does not find
// an alert nobody tracks any more.
func ForgetRules(db *store.DB, names []string) error {
	return ForgetRulesBatched(db, names, 0)
}

// ForgetRulesBatched is ForgetRules deleting at most batch keys per
// transaction (0: all in one), for a store whose commits carry a bounded
// number of writes.
func ForgetRulesBatched(db *store.DB, names []string, batch int) error {
	if len(names) == 0 {
		return nil
	}
	type doomed struct{ bucket, key []byte }
	var keys []doomed
	if err := db.View(func(tx *store.Tx) error {
		for _, name := range names {
			prefix := append([]byte(name), 0)
			for _, b := range [][]byte{store.BucketAlerts, store.BucketLastSeen} {
				c := tx.Bucket(b).Cursor()
				for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
					keys = append(keys, doomed{b, bytes.Clone(k)})
				}
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if batch <= 0 {
		batch = max(len(keys), 1)
	}
	for i := 0; i < len(keys); i += batch {
		chunk := keys[i:min(i+batch, len(keys))]
		if err := db.Update(func(tx *store.Tx) error {
			for _, d := range chunk {
				if err := tx.Bucket(d.bucket).Delete(d.key); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}
