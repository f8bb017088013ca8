package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alertd/alertd/internal/silence"
)

// Silences are the cluster's silences: one key-value bucket
// (<prefix>_silences) that every instance watches, so a silence added
// through any instance, or by `alertd silence add` connected to NATS,
// holds back the mails of every partition. They are not partition state:
// a silence covers a rule on a topic filter, whichever partitions its
// series fall in. Safe for concurrent use.
//
// Each key holds one silence as JSON; IDs come from a counter key updated
// by compare-and-set, so they stay the small numbers `alertd silence
// list` shows. Expired silences are deleted by whichever instance sees
// them first (a delete conditioned on the revision it read).
type Silences struct {
	silence.Set
	kv        jetstream.KeyValue
	log       *slog.Logger
	onRemoved func(silence.Silence)

	mu   sync.Mutex
	revs map[uint64]uint64 // each silence's revision, for the conditioned delete
	// seen is the latest revision applied for each ID, put or delete: an
	// update the watch brings late (after Add or Remove applied a later
	// one) is ignored.
	seen map[uint64]uint64
	w    jetstream.KeyWatcher
}

// SilencesConfig is what OpenSilences needs.
type SilencesConfig struct {
	Prefix   string // as Config.Prefix
	Replicas int    // as Config.Replicas
	Logger   *slog.Logger
	// OnRemoved, when not nil, hears of each silence removed before its
	// expiry (by anyone), so that what it held back is tried again.
	OnRemoved func(silence.Silence)
}

const (
	silenceKeyPrefix = "s."
	silenceCounter   = "next_id"
)

func silenceKey(id uint64) string { return silenceKeyPrefix + strconv.FormatUint(id, 10) }

// silencesBucket is the bucket's name.
func silencesBucket(prefix string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return prefix + "_silences"
}

// OpenSilences creates the bucket if needed and loads the silences. Run
// keeps them up to date; a command that only reads or writes once need
// not call it.
func OpenSilences(ctx context.Context, js jetstream.JetStream, cfg SilencesConfig) (*Silences, error) {
	kcfg := jetstream.KeyValueConfig{
		Bucket:      silencesBucket(cfg.Prefix),
		Description: "alertd silences, shared by every instance",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(cfg.Replicas, 1),
	}
	kv, err := js.CreateKeyValue(ctx, kcfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, kcfg.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("silence bucket %s: %w", kcfg.Bucket, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Silences{kv: kv, log: log, onRemoved: cfg.OnRemoved, revs: map[uint64]uint64{}, seen: map[uint64]uint64{}}
	if err := s.watch(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// watch (re)starts the watch on the silences and brings the set to what
// the bucket holds now. The watch replays each key's last entry, delete
// markers included, so a silence removed while no watch ran is removed
// here, and reported; one whose key is gone altogether (purged) is
// dropped too, if it is older than what the replay brought.
func (s *Silences) watch(ctx context.Context) error {
	w, err := s.kv.Watch(ctx, silenceKeyPrefix+">")
	if err != nil {
		return fmt.Errorf("watch silences: %w", err)
	}
	present := map[uint64]bool{}
	var newest uint64
	for {
		e, ok := <-w.Updates()
		if !ok {
			// nats.go ends a watch it cannot keep (a NATS node lost):
			// what came so far is not the whole bucket.
			_ = w.Stop()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errors.New("watch silences: ended before the bucket's silences were all read")
		}
		if e == nil {
			break // the values held at the start are all in
		}
		newest = max(newest, e.Revision())
		if id, ok := s.apply(e); ok {
			present[id] = true
		}
	}
	s.mu.Lock()
	var gone []uint64
	for id, rev := range s.revs {
		if !present[id] && rev < newest {
			gone = append(gone, id)
		}
	}
	s.w = w
	s.mu.Unlock()
	for _, id := range gone {
		s.forget(id, 0)
	}
	return nil
}

// apply takes one update of the bucket; present says the bucket holds
// silence id as of this entry (a put, applied now or already).
func (s *Silences) apply(e jetstream.KeyValueEntry) (id uint64, present bool) {
	id, err := strconv.ParseUint(strings.TrimPrefix(e.Key(), silenceKeyPrefix), 10, 64)
	if err != nil {
		return 0, false // not a silence of ours
	}
	put := e.Operation() == jetstream.KeyValuePut
	var si silence.Silence
	readable := put && json.Unmarshal(e.Value(), &si) == nil && si.ID == id
	s.mu.Lock()
	if e.Revision() <= s.seen[id] {
		// Applied already (a watch again replays every key), or older
		// than what Add or Remove applied.
		_, held := s.revs[id]
		s.mu.Unlock()
		return id, put && held
	}
	s.seen[id] = e.Revision()
	if readable {
		s.revs[id] = e.Revision()
		s.Put(si) // under s.mu: a Remove cannot slip between the check and the put
		s.mu.Unlock()
		return id, true
	}
	s.mu.Unlock()
	if put {
		// Holding nothing back is the safe side for an alerting service.
		s.log.Warn("silence unreadable; ignored", "key", e.Key(), "revision", e.Revision())
	}
	s.forget(id, e.Revision())
	return id, false
}

// forget drops silence id, as of revision rev (0: of none known),
// telling OnRemoved when it was still active.
func (s *Silences) forget(id, rev uint64) {
	s.mu.Lock()
	delete(s.revs, id)
	s.seen[id] = max(s.seen[id], rev)
	s.mu.Unlock()
	si, ok := s.Delete(id)
	if ok && s.onRemoved != nil && si.Active(time.Now()) {
		s.onRemoved(si)
	}
}

// Run applies the bucket's updates until ctx ends, watching again when
// nats.go ends a watch (as after a NATS node's loss), and deletes expired
// silences every minute.
func (s *Silences) Run(ctx context.Context) error {
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	defer s.stop()
	for {
		s.mu.Lock()
		w := s.w
		s.mu.Unlock()
		var updates <-chan jetstream.KeyValueEntry
		if w != nil {
			updates = w.Updates()
		}
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-updates:
			if ok {
				if e != nil {
					s.apply(e)
				}
				continue
			}
			s.stop()
			for {
				err := s.watch(ctx)
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return nil
				}
				s.log.Warn("silences: watching again", "err", err)
				if !sleepCtx(ctx, 2*time.Second) {
					return nil
				}
			}
		case now := <-sweep.C:
			s.sweep(ctx, now)
		}
	}
}

func (s *Silences) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w != nil {
		_ = s.w.Stop()
		s.w = nil
	}
}

// sweep deletes the silences expired at now; another instance deleting
// the same one first makes the conditioned delete fail, which is fine. It
// takes at most ten seconds, so that NATS in trouble does not hold up the
// watch's updates for long.
func (s *Silences) sweep(ctx context.Context, now time.Time) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	active := map[uint64]bool{}
	for _, si := range s.List(now) {
		active[si.ID] = true
	}
	s.mu.Lock()
	expired := map[uint64]uint64{}
	for id, rev := range s.revs {
		if !active[id] {
			expired[id] = rev
		}
	}
	s.mu.Unlock()
	for id, rev := range expired {
		_ = s.kv.Delete(ctx, silenceKey(id), jetstream.LastRevision(rev))
	}
}

// Add stores si under the next ID and returns it as stored. The caller
// validates it first.
func (s *Silences) Add(si silence.Silence) (silence.Silence, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := s.nextID(ctx)
	if err != nil {
		return silence.Silence{}, fmt.Errorf("add silence: %w", err)
	}
	si.ID = id
	v, err := json.Marshal(si)
	if err != nil {
		return silence.Silence{}, err
	}
	rev, err := s.kv.Create(ctx, silenceKey(id), v)
	if err != nil {
		return silence.Silence{}, fmt.Errorf("add silence: %w", err)
	}
	s.mu.Lock()
	if rev > s.seen[id] { // the watch may have applied it, or a later delete, already
		s.revs[id], s.seen[id] = rev, rev
		s.Put(si) // the watch brings it too; a command that does not watch lists it at once
	}
	s.mu.Unlock()
	return si, nil
}

// nextID takes the next silence ID from the counter key, by
// compare-and-set so that two instances never hand out the same one.
func (s *Silences) nextID(ctx context.Context) (uint64, error) {
	for {
		var n, rev uint64
		e, err := s.kv.Get(ctx, silenceCounter)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return 0, err
		default:
			if n, err = strconv.ParseUint(string(e.Value()), 10, 64); err != nil {
				return 0, fmt.Errorf("silence counter unreadable: %q", e.Value())
			}
			rev = e.Revision()
		}
		next := []byte(strconv.FormatUint(n+1, 10))
		if rev == 0 {
			_, err = s.kv.Create(ctx, silenceCounter, next)
		} else {
			_, err = s.kv.Update(ctx, silenceCounter, next, rev)
		}
		switch {
		case err == nil:
			return n + 1, nil
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			continue // another instance took that one
		default:
			return 0, err
		}
	}
}

// Remove deletes silence id; silence.ErrNotFound when there is none.
func (s *Silences) Remove(id uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := s.kv.Get(ctx, silenceKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return silence.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("remove silence: %w", err)
	}
	if err := s.kv.Delete(ctx, silenceKey(id), jetstream.LastRevision(e.Revision())); err != nil {
		return fmt.Errorf("remove silence: %w", err)
	}
	s.forget(id, e.Revision()) // the put read; the delete marker comes after it
	return nil
}
