package alerts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

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
	RetryAt  time.Time `json:"retry_at,omitzero"`
	Value    string    `json:"value,omitempty"`
	Num      float64   `json:"num,omitempty"`
	IsNum    bool      `json:"is_num,omitempty"`
	Payload  string    `json:"payload,omitempty"`
}

func seriesKey(rule, topic string) []byte {
	k := make([]byte, 0, len(rule)+1+len(topic))
	k = append(append(append(k, rule...), 0), topic...)
	return k
}

// Record returns the series to persist for tr, with the outcome of its
// mail applied: sent says a mail was queued in the same transaction,
// msgID is its Message-ID; retryAt is when a held-back first mail may go.
func (tr *Transition) Record(sent bool, msgID string, retryAt time.Time) Series {
	s := tr.Snapshot
	s.mailed(sent, msgID, tr.Notification.At, retryAt)
	return s
}

// Put writes s in tx. A threshold series back to ok is deleted: only what
// a restart must remember is kept.
func Put(tx *bolt.Tx, s *Series) error {
	b := tx.Bucket(store.BucketAlerts)
	k := seriesKey(s.Rule.Name, s.Topic)
	if s.State == OK && !s.Rule.Silence() {
		return b.Delete(k)
	}
	if s.State == Pending {
		// for: timers are not persisted: after a restart the condition
		// must hold for the whole for: again.
		return b.Delete(k)
	}
	v, err := json.Marshal(record{
		State: s.State, Since: s.Since, LastSeen: s.LastSeen, LastMail: s.LastMail,
		Notified: s.Notified, Thread: s.Thread, RetryAt: s.RetryAt,
		Value: s.Value.Text, Num: s.Value.Num, IsNum: s.Value.IsNum, Payload: s.Payload,
	})
	if err != nil {
		return err
	}
	return b.Put(k, v)
}

// Load reads the persisted series of the rules in engine. Series of rules
// no longer configured are deleted.
func (t *Tracker) Load(db *bolt.DB, engine *rules.Engine) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(store.BucketAlerts)
		var stale [][]byte
		err := b.ForEach(func(k, v []byte) error {
			name, topic, ok := bytes.Cut(k, []byte{0})
			r := engine.Rule(string(name))
			var rec record
			if !ok || r == nil || json.Unmarshal(v, &rec) != nil || rec.State > Firing ||
				(rec.State == OK && !r.Silence()) {
				stale = append(stale, bytes.Clone(k))
				return nil
			}
			s := &Series{
				Rule: r, Topic: string(topic), State: rec.State, Since: rec.Since, LastSeen: rec.LastSeen,
				LastMail: rec.LastMail, Notified: rec.Notified, Thread: rec.Thread, RetryAt: rec.RetryAt,
				Value:   rules.Value{Text: rec.Value, Num: rec.Num, IsNum: rec.IsNum},
				Payload: rec.Payload,
			}
			t.series[key{r.Name, s.Topic}] = s
			t.schedule(s)
			n++
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range stale {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("load alert state: %w", err)
	}
	return n, nil
}

// Checkpoint writes the last-seen times of silence series that changed.
// It is not per message: a crash forgets at most one checkpoint interval
// of last-seen times, which only delays a silence alert. It updates stored
// records field by field so it never overwrites a newer transition.
func (t *Tracker) Checkpoint(db *bolt.DB) error {
	type seen struct {
		s    Series
		last time.Time
	}
	t.mu.Lock()
	var dirty []seen
	for _, s := range t.series {
		if s.dirty {
			dirty = append(dirty, seen{*s, s.LastSeen})
			s.dirty = false
		}
	}
	t.mu.Unlock()
	if len(dirty) == 0 {
		return nil
	}
	err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(store.BucketAlerts)
		for i := range dirty {
			d := &dirty[i]
			k := seriesKey(d.s.Rule.Name, d.s.Topic)
			var rec record
			if v := b.Get(k); v != nil && json.Unmarshal(v, &rec) == nil {
				if !d.last.After(rec.LastSeen) {
					continue
				}
				rec.LastSeen = d.last
				v, err := json.Marshal(rec)
				if err != nil {
					return err
				}
				if err := b.Put(k, v); err != nil {
					return err
				}
				continue
			}
			if err := Put(tx, &d.s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.mu.Lock()
		for i := range dirty {
			if s := t.series[key{dirty[i].s.Rule.Name, dirty[i].s.Topic}]; s != nil {
				s.dirty = true
			}
		}
		t.mu.Unlock()
	}
	return err
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
