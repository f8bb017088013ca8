// Package dedupe is the gate between a matched rule and a mail: it holds
// back a notification when its series had a mail within the rule's
// cooldown, or when the rule has used up its rate limit, and counts what it
// held back so the next mail can say so. Its state lives in the store (the
// series and rules buckets) and survives restarts, held-back counts
// included.
//
// The gate's verdict, Check, is a pure function of a Window (what Read
// found stored) and the clock. Its caller reads, decides and writes (Pass
// or Hold, and the mail) in one transaction, so a crash can neither send
// without recording nor record without sending.
//
// A stored value the gate cannot decode is moved to the store's quarantine
// by the next write transaction that reads it, and read as absent: the
// series' cooldown, or the rule's rate window, starts afresh.
package dedupe

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/alertd/alertd/internal/store"
)

// Reason is why a notification is held back; "" when it is not. The values
// are metric label values.
type Reason string

// Reasons a notification is held back.
const (
	ReasonCooldown  Reason = "cooldown"
	ReasonRateLimit Reason = "rate_limit"
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

// Window is what the gate has stored for a candidate.
type Window struct {
	LastMail time.Time // the series' last mail; zero: none
	Sent     []int64   // the rule's mail times (Unix ns), oldest first
	Held     uint64    // the rule's mails held back since its last one
}

// Check returns why c must be held back at now given w, or "", and when
// the cooldown ends or the rate window reopens.
func Check(c Candidate, w Window, now time.Time) (Reason, time.Time) {
	if c.Cooldown > 0 && !w.LastMail.IsZero() && now.Sub(w.LastMail) < c.Cooldown {
		return ReasonCooldown, w.LastMail.Add(c.Cooldown)
	}
	if c.Limit > 0 && !c.Member {
		if sent := prune(w.Sent, c, now); len(sent) >= c.Limit {
			// The window reopens when its oldest mail leaves it.
			return ReasonRateLimit, time.Unix(0, sent[len(sent)-c.Limit]).Add(c.Per)
		}
	}
	return "", time.Time{}
}

// Gate reads and writes the gate's state. Safe for concurrent use.
type Gate struct {
	db  *store.DB
	now func() time.Time

	// OnQuarantine, when set (before the gate is used), is told of each
	// value moved to quarantine once the move is committed.
	OnQuarantine func(store.Quarantined)
}

// New returns a gate over db; now is the clock (time.Now in production).
func New(db *store.DB, now func() time.Time) *Gate {
	return &Gate{db: db, now: now}
}

// Read returns what is stored for c. A value it cannot decode is read as
// absent, and quarantined when tx can write.
func (g *Gate) Read(tx *store.Tx, c Candidate) (Window, error) {
	var w Window
	var err error
	if w.LastMail, err = g.lastMail(tx, c); err != nil {
		return Window{}, err
	}
	st, err := g.loadRule(tx, c.Rule)
	if err != nil {
		return Window{}, err
	}
	w.Sent, w.Held = st.sent, st.held
	return w, nil
}

// Pass records, in tx, that c's mail goes out at now, w being what Read
// returned in tx. It returns how many of the rule's mails were held back
// since its last one, which the mail may say; a group member leaves the
// rule's window and count to its group mail, and reports 0.
func (g *Gate) Pass(tx *store.Tx, c Candidate, w Window, now time.Time) (uint64, error) {
	var suppressed uint64
	after := w.Passed(c, now)
	if !c.Member {
		suppressed = w.Held
		if err := saveRule(tx, c.Rule, ruleState{sent: after.Sent, held: after.Held}); err != nil {
			return 0, err
		}
	}
	if c.Cooldown > 0 {
		if err := tx.Bucket(store.BucketSeries).Put(seriesKey(c), encodeTime(after.LastMail)); err != nil {
			return 0, err
		}
	}
	return suppressed, nil
}

// Hold records, in tx, that c's mail was held back, w being what Read
// returned in tx: the next mail of the rule counts it.
func (g *Gate) Hold(tx *store.Tx, c Candidate, w Window) error {
	after := w.HeldBack()
	return saveRule(tx, c.Rule, ruleState{held: after.Held, sent: after.Sent})
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

// lastMail returns when c's series last had a mail; zero if it had none.
func (g *Gate) lastMail(tx *store.Tx, c Candidate) (time.Time, error) {
	k := seriesKey(c)
	v := tx.Bucket(store.BucketSeries).Get(k)
	if v == nil {
		return time.Time{}, nil
	}
	if t, ok := decodeTime(v); ok {
		return t, nil
	}
	return time.Time{}, g.unreadable(tx, store.BucketSeries, k, v, fmt.Errorf("decode last mail time: %d bytes, want 8", len(v)))
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

// Prune deletes, in batches of at most limit per transaction, the
// series' last-mail times older than before: past every cooldown, they
// decide nothing any more. Without it each distinct device mail, and each
// series ever mailed, would stay in the store for good. It returns how
// many it deleted.
func (g *Gate) Prune(before time.Time, limit int) (int, error) {
	total := 0
	for {
		n := 0
		err := g.db.Update(func(tx *store.Tx) error {
			b := tx.Bucket(store.BucketSeries)
			var old [][]byte
			c := b.Cursor()
			for k, v := c.First(); k != nil && len(old) < limit; k, v = c.Next() {
				if t, ok := decodeTime(v); !ok || t.Before(before) {
					old = append(old, append([]byte(nil), k...))
				}
			}
			for _, k := range old {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			n = len(old)
			return nil
		})
		total += n
		if err != nil || n < limit {
			return total, err
		}
	}
}
