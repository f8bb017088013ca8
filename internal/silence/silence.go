// Package silence keeps the operator's silences: "do not mail about rule R
// (on topic T) until time U". Silences live in bbolt, so they survive
// restarts, and expire by themselves. A silenced alert still moves
// through its states; only its mails are held back.
package silence

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/alertd/alertd/internal/store"
	"github.com/alertd/alertd/internal/topic"
)

// Silence is one silence.
type Silence struct {
	ID      uint64    `json:"id"`
	Rule    string    `json:"rule"`
	Series  string    `json:"series,omitempty"` // a topic or topic filter; empty: every series of the rule
	Comment string    `json:"comment,omitempty"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// Active reports whether s holds at now.
func (s *Silence) Active(now time.Time) bool { return now.Before(s.Expires) }

// Matches reports whether s covers rule on series.
func (s *Silence) Matches(rule, series string) bool {
	if s.Rule != rule {
		return false
	}
	return s.Series == "" || s.Series == series || topic.Matches(s.Series, series)
}

// ErrNotFound means no silence has the given id.
var ErrNotFound = errors.New("no such silence")

// Validate checks a silence before it is added.
func (s *Silence) Validate(rules []string, now time.Time) error {
	switch {
	case s.Rule == "":
		return errors.New("a silence needs a rule")
	case !slices.Contains(rules, s.Rule):
		return fmt.Errorf("no rule named %q", s.Rule)
	case !s.Expires.After(now):
		return errors.New("a silence must last a positive duration")
	case s.Series != "" && topic.ValidateFilter(s.Series) != nil:
		return fmt.Errorf("series %q is not a topic or topic filter", s.Series)
	case len(s.Comment) > 1024:
		return errors.New("comment too long (at most 1024 bytes)")
	}
	return nil
}

// Set is silences held in memory, ordered by ID: what every kind of
// silence store answers from. The zero Set is empty and ready. Safe for
// concurrent use.
type Set struct {
	mu  sync.RWMutex
	all []Silence // ordered by id
}

// Put adds si, or replaces the silence of its ID.
func (s *Set) Put(si Silence) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearchFunc(s.all, si.ID, func(x Silence, id uint64) int { return cmp.Compare(x.ID, id) })
	if found {
		s.all[i] = si
		return
	}
	s.all = slices.Insert(s.all, i, si)
}

// Delete removes the silence of id, reporting whether there was one.
func (s *Set) Delete(id uint64) (Silence, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearchFunc(s.all, id, func(x Silence, id uint64) int { return cmp.Compare(x.ID, id) })
	if !found {
		return Silence{}, false
	}
	si := s.all[i]
	s.all = slices.Delete(s.all, i, i+1)
	return si, true
}

// List returns the silences still active at now.
func (s *Set) List(now time.Time) []Silence {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []Silence{}
	for _, si := range s.all {
		if si.Active(now) {
			out = append(out, si)
		}
	}
	return out
}

// Silenced returns when the latest silence covering rule on series ends,
// or the zero time when none does.
func (s *Set) Silenced(rule, series string, now time.Time) time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var until time.Time
	for i := range s.all {
		si := &s.all[i]
		if si.Active(now) && si.Matches(rule, series) && si.Expires.After(until) {
			until = si.Expires
		}
	}
	return until
}

// Store is the silences of one bbolt file, cached in memory. Safe for
// concurrent use.
type Store struct {
	db *store.DB
	Set
}

// Open loads the silences of db and deletes those expired. A silence that
// cannot be decoded is moved to the store's quarantine, and onQuarantine
// (when not nil) told once that is committed: it no longer holds mail
// back, which is the safe side for an alerting service.
func Open(db *store.DB, now time.Time, onQuarantine func(store.Quarantined)) (*Store, error) {
	s := &Store{db: db}
	err := db.Update(func(tx *store.Tx) error {
		b := tx.Bucket(store.BucketSilences)
		var expired [][]byte
		type unreadable struct {
			k, v []byte
			err  error
		}
		var bad []unreadable
		err := b.ForEach(func(k, v []byte) error {
			var si Silence
			if err := json.Unmarshal(v, &si); err != nil {
				bad = append(bad, unreadable{bytes.Clone(k), bytes.Clone(v), fmt.Errorf("decode silence: %w", err)})
				return nil
			}
			if !si.Active(now) {
				expired = append(expired, bytes.Clone(k))
				return nil
			}
			s.Put(si)
			return nil
		})
		if err != nil {
			return err
		}
		for _, u := range bad {
			if err := store.Quarantine(tx, store.BucketSilences, u.k, u.v, u.err, onQuarantine); err != nil {
				return err
			}
		}
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load silences: %w", err)
	}
	return s, nil
}

// Add stores si, assigning its ID.
func (s *Store) Add(si Silence) (Silence, error) {
	err := s.db.Update(func(tx *store.Tx) error {
		b := tx.Bucket(store.BucketSilences)
		id, err := b.NextSequence()
		if err != nil {
			return err
		}
		si.ID = id
		v, err := json.Marshal(si)
		if err != nil {
			return err
		}
		return b.Put(binary.BigEndian.AppendUint64(nil, id), v)
	})
	if err != nil {
		return Silence{}, fmt.Errorf("add silence: %w", err)
	}
	s.Put(si)
	return si, nil
}

// Remove deletes a silence, or the unreadable silence of that id kept in
// quarantine.
func (s *Store) Remove(id uint64) error {
	err := s.db.Update(func(tx *store.Tx) error {
		b := tx.Bucket(store.BucketSilences)
		k := binary.BigEndian.AppendUint64(nil, id)
		if b.Get(k) == nil {
			if ok, err := store.DropQuarantined(tx, store.BucketSilences, k); ok || err != nil {
				return err
			}
			return ErrNotFound
		}
		return b.Delete(k)
	})
	if err != nil {
		return err
	}
	s.Delete(id)
	return nil
}
