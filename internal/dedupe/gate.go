// Package dedupe is the gate between a matched rule and a mail: it holds
// back a notification when its series had a mail within the rule's
// cooldown, or when the rule has used up its rate limit, and counts what it
// held back so the next mail can say so. Its state lives in bbolt (the
// series and rules buckets) and survives restarts.
//
// The decision itself is a pure function of stored state and the injected
// clock. Admitting a notification and enqueueing its mail happen in one
// transaction, so a crash can neither send without recording nor record
// without sending.
//
// A stored value the gate cannot decode is moved to the store's quarantine
// by the next write transaction that reads it, and read as absent: the
// series' cooldown, or the rule's rate window, starts afresh.
package dedupe

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/alertd/alertd/internal/store"
)

// Reasons a notification is held back (metric label values).
const (
	ReasonCooldown  = "cooldown"
	ReasonRateLimit = "rate_limit"
)

// Candidate is what the gate decides on.
type Candidate struct {
	Rule     string
	Series   string
	Cooldown time.Duration // 0: no dedupe
	Limit    int           // mails per Per; 0: unlimited
	Per      time.Duration
	// Member: not a mail of its own but a line of a group mail. Only the
	// cooldown applies; the rule's rate window and held-back count are
	// the group mail's.
	Member bool
}

// Verdict is the gate's answer.
type Verdict struct {
	Admitted bool
	Reason   string // why it was held back, when not admitted
	// Suppressed is, for an admitted notification, how many of this rule's
	// notifications were held back since its previous mail.
	Suppressed uint64
	// RetryAt is, for one held back, when the cooldown ends or the rate
	// window reopens.
	RetryAt time.Time
}

// Enqueue writes the admitted notification's mail inside the gate's
// transaction. It may run more than once (bbolt batches retry), so it must
// depend only on its arguments.
type Enqueue func(tx *store.Tx, suppressed uint64) error

// Gate decides and records. Safe for concurrent use.
type Gate struct {
	db  *store.DB
	now func() time.Time

	mu sync.Mutex
	// held counts suppressions not yet written to bbolt. Writing each one
	// would cost an fsync per suppressed reading; they are folded into the
	// next admitting transaction or written by Flush at shutdown.
	held map[string]uint64

	// OnQuarantine, when set (before the gate is used), is told of each
	// value moved to quarantine once the move is committed.
	OnQuarantine func(store.Quarantined)
}

// New returns a gate over db; now is the clock (time.Now in production).
func New(db *store.DB, now func() time.Time) *Gate {
	return &Gate{db: db, now: now, held: map[string]uint64{}}
}

// Admit decides on c and, when admitted, records the mail and calls enqueue
// in the same transaction.
func (g *Gate) Admit(c Candidate, enqueue Enqueue) (Verdict, error) {
	now := g.now()
	var held Verdict
	if err := g.db.View(func(tx *store.Tx) error {
		var err error
		held.Reason, held.RetryAt, err = g.decide(tx, c, now)
		return err
	}); err != nil {
		return Verdict{}, err
	}
	if held.Reason != "" {
		g.hold(c.Rule)
		return held, nil
	}
	// Take the held-back count now, so two admissions of the rule at once
	// cannot both report it; it is given back unless this one is admitted.
	var pending uint64
	if !c.Member {
		g.mu.Lock()
		pending = g.held[c.Rule]
		delete(g.held, c.Rule)
		g.mu.Unlock()
	}
	var v Verdict
	err := g.db.Batch(func(tx *store.Tx) error {
		v = Verdict{}
		var err error
		if v.Reason, v.RetryAt, err = g.decide(tx, c, now); err != nil || v.Reason != "" {
			return err // or another reading of this series got there first
		}
		v.Admitted = true
		if !c.Member {
			st, err := g.loadRule(tx, c.Rule)
			if err != nil {
				return err
			}
			v.Suppressed = st.held + pending
			st.held = 0
			st.sent = append(prune(st.sent, c, now), now.UnixNano())
			if err := saveRule(tx, c.Rule, st); err != nil {
				return err
			}
		}
		if c.Cooldown > 0 {
			if err := tx.Bucket(store.BucketSeries).Put(seriesKey(c), encodeTime(now)); err != nil {
				return err
			}
		}
		return enqueue(tx, v.Suppressed)
	})
	if err != nil || !v.Admitted {
		g.mu.Lock()
		g.held[c.Rule] += pending
		if err == nil {
			g.held[c.Rule]++ // held back after all
		}
		g.mu.Unlock()
	}
	if err != nil {
		return Verdict{}, fmt.Errorf("admit notification: %w", err)
	}
	return v, nil
}

// Unhold takes back one held-back count of rule, for a notification whose
// processing failed and will be decided again.
func (g *Gate) Unhold(rule string) {
	g.mu.Lock()
	if g.held[rule] > 0 {
		g.held[rule]--
	}
	g.mu.Unlock()
}

func (g *Gate) hold(rule string) {
	g.mu.Lock()
	g.held[rule]++
	g.mu.Unlock()
}

// Flush writes held-back counts to bbolt; call it at shutdown.
func (g *Gate) Flush() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	err := g.db.Update(func(tx *store.Tx) error {
		for rule, n := range g.held {
			if n == 0 {
				continue
			}
			st, err := g.loadRule(tx, rule)
			if err != nil {
				return err
			}
			st.held += n
			if err := saveRule(tx, rule, st); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		clear(g.held)
	}
	return err
}

// decide returns why c must be held back now, or "", and for the cooldown
// when it ends.
func (g *Gate) decide(tx *store.Tx, c Candidate, now time.Time) (string, time.Time, error) {
	if c.Cooldown > 0 {
		last, ok, err := g.lastMail(tx, c)
		if err != nil {
			return "", time.Time{}, err
		}
		if ok && now.Sub(last) < c.Cooldown {
			return ReasonCooldown, last.Add(c.Cooldown), nil
		}
	}
	if c.Limit > 0 && !c.Member {
		st, err := g.loadRule(tx, c.Rule)
		if err != nil {
			return "", time.Time{}, err
		}
		if sent := prune(st.sent, c, now); len(sent) >= c.Limit {
			// The window reopens when its oldest mail leaves it.
			return ReasonRateLimit, time.Unix(0, sent[len(sent)-c.Limit]).Add(c.Per), nil
		}
	}
	return "", time.Time{}, nil
}

// unreadable moves a value the gate cannot decode to quarantine when tx
// can write. A read transaction leaves it: the write that follows reads it
// as absent too, and moves it.
func (g *Gate) unreadable(tx *store.Tx, bucket, k, v []byte, cause error) error {
	if !tx.Writable() {
		return nil
	}
	return store.Quarantine(tx, bucket, k, v, cause, g.OnQuarantine)
}

// lastMail returns when c's series last had a mail, if it had one.
func (g *Gate) lastMail(tx *store.Tx, c Candidate) (time.Time, bool, error) {
	k := seriesKey(c)
	v := tx.Bucket(store.BucketSeries).Get(k)
	if v == nil {
		return time.Time{}, false, nil
	}
	if t, ok := decodeTime(v); ok {
		return t, true, nil
	}
	return time.Time{}, false, g.unreadable(tx, store.BucketSeries, k, v, fmt.Errorf("decode last mail time: %d bytes, want 8", len(v)))
}

// prune drops send times that left the rate window.
func prune(sent []int64, c Candidate, now time.Time) []int64 {
	if c.Limit == 0 {
		return sent[:0]
	}
	cutoff := now.Add(-c.Per).UnixNano()
	i := 0
	for i < len(sent) && sent[i] <= cutoff {
		i++
	}
	kept := sent[i:]
	if len(kept) > c.Limit { // the limit was lowered since
		kept = kept[len(kept)-c.Limit:]
	}
	return kept
}

func seriesKey(c Candidate) []byte {
	k := make([]byte, 0, len(c.Rule)+1+len(c.Series))
	k = append(k, c.Rule...)
	k = append(k, 0)
	return append(k, c.Series...)
}

func encodeTime(t time.Time) []byte { return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())) }

func decodeTime(b []byte) (time.Time, bool) {
	if len(b) != 8 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b))), true
}

// ruleState is a rule's rate window and held-back count. Encoded as
// held (8 bytes) followed by send times (8 bytes each), big-endian.
type ruleState struct {
	held uint64
	sent []int64
}

// loadRule returns rule's stored state; absent or unreadable, a fresh one.
func (g *Gate) loadRule(tx *store.Tx, rule string) (ruleState, error) {
	b := tx.Bucket(store.BucketRules).Get([]byte(rule))
	if b == nil {
		return ruleState{}, nil
	}
	if len(b) < 8 || len(b)%8 != 0 {
		return ruleState{}, g.unreadable(tx, store.BucketRules, []byte(rule), b,
			fmt.Errorf("decode rate window: %d bytes, want 8 and 8 per mail", len(b)))
	}
	st := ruleState{held: binary.BigEndian.Uint64(b), sent: make([]int64, 0, len(b)/8)}
	for i := 8; i < len(b); i += 8 {
		st.sent = append(st.sent, int64(binary.BigEndian.Uint64(b[i:])))
	}
	return st, nil
}

func saveRule(tx *store.Tx, rule string, st ruleState) error {
	b := make([]byte, 0, 8+8*len(st.sent))
	b = binary.BigEndian.AppendUint64(b, st.held)
	for _, t := range st.sent {
		b = binary.BigEndian.AppendUint64(b, uint64(t))
	}
	return tx.Bucket(store.BucketRules).Put([]byte(rule), b)
}
