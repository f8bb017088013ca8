package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Reading is one device message, handed to exactly one owner of its
// partition at a time (and again, to this or another owner, if it is not
// acknowledged in time).
type Reading struct {
	Topic     string // the MQTT topic the device published on
	Payload   []byte
	Partition int
	// Term is the fencing token of the owner it was delivered to: the
	// lease's KV revision, larger for every later owner of the partition.
	Term uint64
	// Stored is when JetStream stored it; Deliveries counts deliveries,
	// more than 1 after a crash, a timeout or a handler's error.
	Stored     time.Time
	Deliveries uint64

	msg   jetstream.Msg
	lease *lease
	now   func() time.Time
}

// ErrNotOwner is returned by Reading.Ack once this instance no longer holds
// the reading's partition: the reading stays in the stream and goes to the
// partition's next owner.
var ErrNotOwner = errors.New("cluster: this instance no longer owns the partition")

// Ack tells JetStream the reading is done. Call it only after the reading's
// effects are committed. A stale owner's ack is refused (ErrNotOwner), not
// sent: a duplicate at the next owner is harmless under at-least-once, a
// reading acknowledged by an instance that had lost its partition is not.
// The ack itself is not confirmed by the server; a lost ack is a
// redelivery.
func (r Reading) Ack() error {
	if !r.lease.valid(r.now()) {
		return ErrNotOwner
	}
	return r.msg.Ack()
}

// Handler handles one reading. It is called from one goroutine per owned
// partition, so readings of one partition arrive in order and a Handler
// must be safe for concurrent use across partitions. ctx ends when the
// partition is given up. An error returns the reading for another try
// after a second.
type Handler func(ctx context.Context, r Reading) error

// An Opener prepares this instance for a partition it has just taken,
// before the first of its readings: term is the new lease's fencing token.
// It returns the partition's Handler and a close func, called once the
// partition is given up (ctx has ended) and its last reading was handled.
// An error is logged and the open retried (after a second) while the
// lease lasts; readings wait meanwhile.
type Opener func(ctx context.Context, partition int, term uint64) (Handler, func(), error)

// Ingest consumes the partitioned readings this instance owns, shares the
// partitions with its peers and takes over those of a peer that dies.
type Ingest struct {
	cfg   Config
	names names
	log   *slog.Logger

	running atomic.Bool
	started time.Time // what the heartbeat says: when New ran

	mu   sync.Mutex
	held map[int]*lease // written by the coordinator only
	view view

	// Tests: crash stops Run as a killed process would, handing nothing
	// back and releasing nothing; pause, when set, runs before each
	// coordinator step (blocking it models a paused process).
	crash atomic.Bool
	pause func()

	stepped chan int       // a consumer stopped on its own: its lease ran out
	giveUp  chan giveUpReq // partitions whose pipeline asked to be given up
	kvErr   string         // last KV error logged, so a repeating one logs once
}

// New checks cfg and fills its defaults; nothing connects until Run.
func New(cfg Config) (*Ingest, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Ingest{
		cfg:     cfg,
		names:   newNames(cfg.Prefix),
		started: time.Now().UTC(),
		log:     cfg.Logger.With("instance", cfg.Instance),
		held:    map[int]*lease{},
		view:    newView(),
		stepped: make(chan int, cfg.Partitions),
		giveUp:  make(chan giveUpReq, cfg.Partitions),
	}, nil
}

// SetFilters changes the MQTT topic filters the ingest stream captures
// (a reload that adds or removes rules' topics): the stream is updated at
// once. Every instance must run the same rules; one that starts later
// sets its own filters again.
func (i *Ingest) SetFilters(ctx context.Context, filters []string) error {
	c := i.cfg // a copy: i.cfg is never written after New, so readers need no lock
	c.Filters = slices.Clone(filters)
	if err := c.validateFilters(); err != nil {
		return err
	}
	return ensureStream(ctx, c, i.names)
}

type giveUpReq struct {
	p    int
	term uint64
}

// GiveUp hands partition p back (its consumer stops, its lease is
// released) if this instance still holds it under term: for a pipeline
// that can no longer work on it (its state was fenced by a later owner,
// or the local copy of the state fell behind). The partition is then
// taken anew, by a peer or by this instance, under a new term and from
// its state in JetStream. It does not wait.
func (i *Ingest) GiveUp(p int, term uint64) {
	select {
	case i.giveUp <- giveUpReq{p, term}:
	default: // one per partition is queued at most; more are the same request
	}
}

// Partitions is how many partitions the topics are spread over.
func (i *Ingest) Partitions() int { return i.cfg.Partitions }

// Instance is this instance's name among its peers.
func (i *Ingest) Instance() string { return i.cfg.Instance }

// Owned lists the partitions this instance holds a valid lease on.
func (i *Ingest) Owned() []int {
	now := i.cfg.now()
	i.mu.Lock()
	defer i.mu.Unlock()
	var out []int
	for p, l := range i.held {
		if l.valid(now) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// Run creates the stream, consumers and lease bucket if needed, joins the
// instances sharing them, and hands this instance's readings to handle
// until ctx ends. Then it hands back the readings it holds unhandled and
// releases its leases, so a peer takes over at once rather than after
// LeaseTTL. It returns an error if the NATS connection closes or the
// bucket's watch ends.
func (i *Ingest) Run(ctx context.Context, handle Handler) error {
	return i.RunPartitions(ctx, func(context.Context, int, uint64) (Handler, func(), error) { return handle, func() {}, nil })
}

// RunPartitions is Run with a pipeline per partition: open is called as
// each partition is taken, and its close as it is given up.
func (i *Ingest) RunPartitions(ctx context.Context, open Opener) error {
	if !i.running.CompareAndSwap(false, true) {
		return errors.New("cluster: Ingest already running")
	}
	kv, err := i.setup(ctx)
	if err != nil {
		return err
	}
	for {
		err = i.watch(ctx, kv, open)
		if !errors.Is(err, errWatchEnded) || ctx.Err() != nil {
			break
		}
		// nats.go ends a KV watch whose ordered consumer it could not
		// recreate, as after a NATS node's loss; the leases are unharmed.
		i.log.Warn("lease bucket watch ended; watching again")
		if !sleepCtx(ctx, retryAfter/10) {
			break
		}
	}
	i.stopAll(kv)
	return err
}

var errWatchEnded = errors.New("cluster: lease bucket watch ended")

func (i *Ingest) watch(ctx context.Context, kv jetstream.KeyValue, open Opener) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		if i.cfg.JS.Conn().IsClosed() {
			return fmt.Errorf("watch lease bucket: %w", err)
		}
		i.noteKV(fmt.Errorf("watch lease bucket: %w", err))
		return errWatchEnded
	}
	defer w.Stop()
	return i.coordinate(ctx, kv, w, open)
}

// setup retries ensureTopology until it succeeds or ctx ends: NATS may be
// electing leaders, or another instance creating the same stream.
func (i *Ingest) setup(ctx context.Context) (jetstream.KeyValue, error) {
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*i.cfg.LeaseTTL)
		kv, err := ensureTopology(attempt, i.cfg, i.names)
		cancel()
		if err == nil {
			i.noteKV(nil)
			return kv, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if i.cfg.JS.Conn().IsClosed() {
			return nil, fmt.Errorf("cluster: set up: %w", err)
		}
		i.noteKV(fmt.Errorf("set up stream, consumers and lease bucket: %w", err))
		if !sleepCtx(ctx, retryAfter) {
			return nil, err
		}
	}
}

// coordinate is the one goroutine that writes the bucket: heartbeats,
// renewals, takes and releases. It reacts to the watch at once, which is
// what makes a takeover follow an expiry closely.
func (i *Ingest) coordinate(ctx context.Context, kv jetstream.KeyValue, w jetstream.KeyWatcher, open Opener) error {
	tick := time.NewTicker(i.cfg.renewEvery())
	defer tick.Stop()
	i.heartbeat(ctx, kv)
	// The watch replays every key, then sends nil; until then the view
	// being built is partial and taking partitions waits for it.
	fresh, synced := newView(), false
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errWatchEnded
			}
			i.step()
			switch {
			case !synced && e == nil:
				i.mu.Lock()
				i.view, synced = fresh, true
				i.mu.Unlock()
			case !synced:
				fresh.apply(e)
			case e != nil:
				i.mu.Lock()
				i.view.apply(e)
				i.mu.Unlock()
			}
		case <-tick.C:
			i.step()
			// Renewals first: an instance back from a pause learns what
			// it lost before it tells its peers it is alive.
			i.renew(ctx, kv, open)
			i.heartbeat(ctx, kv)
		case <-i.stepped:
			i.step()
			i.renew(ctx, kv, open)
		case g := <-i.giveUp:
			i.step()
			i.mu.Lock()
			l := i.held[g.p]
			i.mu.Unlock()
			if l != nil && l.term == g.term {
				i.log.Warn("partition given up by its pipeline; it is taken anew from its state", "partition", g.p, "term", g.term)
				i.release(ctx, kv, g.p)
			}
		}
		if i.cfg.JS.Conn().IsClosed() {
			return errors.New("cluster: NATS connection closed")
		}
		if ctx.Err() != nil {
			return nil
		}
		if synced {
			i.reconcile(ctx, kv, open)
		}
	}
}

func (i *Ingest) step() {
	if i.pause != nil {
		i.pause()
	}
}

// heartbeat says this instance is alive; its key expiring is how peers
// learn it is not.
func (i *Ingest) heartbeat(ctx context.Context, kv jetstream.KeyValue) {
	op, cancel := context.WithTimeout(ctx, i.cfg.opTimeout())
	defer cancel()
	v, _ := jsonValue(memberValue{Started: i.started})
	_, err := kv.Put(op, memberKey(i.cfg.Instance), v)
	if ctx.Err() == nil {
		i.noteKV(err)
	}
}

// renew extends every held lease with a compare-and-set on its last
// revision. A refused renewal is the fence: someone else took the
// partition, or it expired, and this instance steps back. The writes go
// out together: a round then takes one KV round trip, not one per
// partition, which under load is what keeps it inside a lease's validity.
func (i *Ingest) renew(ctx context.Context, kv jetstream.KeyValue, open Opener) {
	leases := i.heldLeases()
	type result struct {
		rev  uint64
		sent time.Time
		err  error
	}
	results := make([]result, len(leases))
	var wg sync.WaitGroup
	for k, l := range leases {
		wg.Go(func() {
			sent := i.cfg.now()
			val, _ := jsonValue(leaseValue{Owner: i.cfg.Instance, Term: l.term})
			op, cancel := context.WithTimeout(ctx, i.cfg.opTimeout())
			defer cancel()
			rev, err := kv.Update(op, leaseKey(l.p), val, l.revision())
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) && i.adopt(op, kv, l) {
				// A renewal that timed out here had been applied there.
				rev, err = kv.Update(op, leaseKey(l.p), val, l.revision())
			}
			results[k] = result{rev, sent, err}
		})
	}
	wg.Wait()
	for k, l := range leases {
		switch r := results[k]; {
		case r.err == nil:
			l.renewed(r.rev, r.sent.Add(i.cfg.validity()))
			if !l.running() {
				i.startConsumer(ctx, l, open)
			}
		case errors.Is(r.err, jetstream.ErrKeyRevisionMismatch), errors.Is(r.err, jetstream.ErrKeyNotFound):
			op, cancel := context.WithTimeout(ctx, i.cfg.opTimeout())
			now, _ := holder(op, kv, l.p)
			cancel()
			i.drop(l, now)
		default:
			if ctx.Err() == nil {
				i.noteKV(r.err)
			}
		}
	}
}

// adopt takes up the key's current revision if the entry still carries
// this lease's owner and term: nobody else writes our term, a new owner's
// first write makes its own.
func (i *Ingest) adopt(ctx context.Context, kv jetstream.KeyValue, l *lease) bool {
	e, ok := holder(ctx, kv, l.p)
	if !ok || e.owner != i.cfg.Instance || e.term != l.term {
		return false
	}
	l.mu.Lock()
	l.rev = e.rev
	l.mu.Unlock()
	return true
}

// holder reads partition p's lease from the bucket, not from the view,
// which a paused instance has not caught up on.
func holder(ctx context.Context, kv jetstream.KeyValue, p int) (leaseEntry, bool) {
	e, err := kv.Get(ctx, leaseKey(p))
	if err != nil {
		return leaseEntry{}, false
	}
	var val leaseValue
	if json.Unmarshal(e.Value(), &val) != nil {
		return leaseEntry{}, false
	}
	if val.Term == 0 {
		val.Term = e.Revision()
	}
	return leaseEntry{owner: val.Owner, term: val.Term, rev: e.Revision()}, true
}

// reconcile gives up partitions beyond this instance's share and tries to
// take free ones below it.
func (i *Ingest) reconcile(ctx context.Context, kv jetstream.KeyValue, open Opener) {
	i.mu.Lock()
	members := i.view.liveMembers(i.cfg.Instance)
	held := map[int]bool{}
	for p := range i.held {
		held[p] = true
	}
	free := map[int]bool{}
	for p := range i.cfg.Partitions {
		if _, taken := i.view.leases[p]; !taken && !held[p] {
			free[p] = true
		}
	}
	i.mu.Unlock()

	release, candidates, want := plan(i.cfg.Partitions, members, i.cfg.Instance, held, free)
	for _, p := range release {
		i.release(ctx, kv, p)
	}
	// Tried together for the same reason renewals are; a candidate lost
	// to a peer is replaced by another on the next event or tick.
	try := candidates[:min(want, len(candidates))]
	taken := make([]*lease, len(try))
	var wg sync.WaitGroup
	for k, p := range try {
		wg.Go(func() { taken[k] = i.acquire(ctx, kv, p) })
	}
	wg.Wait()
	for _, l := range taken {
		if l != nil {
			i.startConsumer(ctx, l, open)
		}
	}
}

// acquire takes a free partition: a create succeeds only if the key does
// not exist, or its last entry is a delete or an expiry marker.
func (i *Ingest) acquire(ctx context.Context, kv jetstream.KeyValue, p int) *lease {
	sent := i.cfg.now()
	val, _ := jsonValue(leaseValue{Owner: i.cfg.Instance})
	op, cancel := context.WithTimeout(ctx, i.cfg.opTimeout())
	defer cancel()
	rev, err := kv.Create(op, leaseKey(p), val)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			// ErrKeyExists: our view was behind; the watch brings the holder.
			i.log.Debug("partition not taken", "partition", p, "err", err)
		}
		return nil
	}
	l := newLease(p, rev, sent.Add(i.cfg.validity()))
	i.mu.Lock()
	i.held[p] = l
	i.mu.Unlock()
	i.log.Info("partition taken", "partition", p, "term", rev)
	return l
}

// release hands a partition over: its consumer returns what it holds
// unhandled, then the lease is deleted if it is still ours.
func (i *Ingest) release(ctx context.Context, kv jetstream.KeyValue, p int) {
	i.mu.Lock()
	l := i.held[p]
	delete(i.held, p)
	i.mu.Unlock()
	if l == nil {
		return
	}
	i.stopConsumers(l)
	l.revoke()
	op, cancel := context.WithTimeout(ctx, i.cfg.opTimeout())
	defer cancel()
	if err := kv.Delete(op, leaseKey(p), jetstream.LastRevision(l.revision())); err != nil {
		i.log.Warn("partition release: lease not deleted; it expires on its own", "partition", p, "term", l.term, "err", err)
		return
	}
	i.log.Info("partition released", "partition", p, "term", l.term)
}

// drop steps back from a partition whose renewal was refused: the lease
// expired, and now has another owner or none.
func (i *Ingest) drop(l *lease, now leaseEntry) {
	i.mu.Lock()
	delete(i.held, l.p)
	i.mu.Unlock()
	l.revoke()
	// Not waited for: the lease is gone already, and the consumer, which
	// sees it revoked, hands nothing more to the handler and acks nothing.
	if l.cancel != nil {
		l.cancel()
	}
	i.log.Warn("partition lost; stepping back: the renewal's compare-and-set was refused",
		"partition", l.p, "term", l.term, "owner", now.owner, "owner_term", now.term)
}

func (i *Ingest) heldLeases() []*lease {
	i.mu.Lock()
	defer i.mu.Unlock()
	out := make([]*lease, 0, len(i.held))
	for _, l := range i.held {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b *lease) int { return a.p - b.p })
	return out
}

// stopAll ends every consumer; unless crashing, it then releases every
// lease and the member key so peers take over without waiting for expiry.
func (i *Ingest) stopAll(kv jetstream.KeyValue) {
	leases := i.heldLeases()
	i.stopConsumersWithin(shutdownWait, leases...)
	if i.crash.Load() || i.cfg.JS.Conn().IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*i.cfg.opTimeout())
	defer cancel()
	for _, l := range leases {
		i.release(ctx, kv, l.p)
	}
	if err := kv.Delete(ctx, memberKey(i.cfg.Instance)); err != nil {
		i.log.Warn("leave: member key not deleted; it expires on its own", "err", err)
	}
}

// noteKV logs a KV error when it differs from the last one, and the
// recovery once, instead of every renewal round.
func (i *Ingest) noteKV(err error) {
	switch {
	case err == nil && i.kvErr != "":
		i.log.Info("lease bucket reachable again")
		i.kvErr = ""
	case err != nil && err.Error() != i.kvErr:
		i.log.Warn("lease bucket", "err", err)
		i.kvErr = err.Error()
	}
}
