package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/cluster"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/engine"
	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/notify"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

// partitionPipeline is alertd's pipeline for one owned partition: the
// single-node pipeline over a local store that replicates to ps. Its
// whole life runs in the partition's consumer goroutine (opened before
// the first reading, closed after the last), and it gives the partition
// up, through the Ingest, when it can no longer work on it.
type partitionPipeline struct {
	a         *App
	partition int
	ps        *cluster.PartitionState
	rs        *rules.Engine
	cfg       *config.Config // the configuration rs came from
	path      string
	log       *slog.Logger
	giveUp    func() // hands the partition back to be taken anew

	db      *store.DB
	tracker *alerts.Tracker
	outbox  *outbox.Outbox
	notify  *notify.Notifier
	eng     *engine.Engine
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// openPartition builds the pipeline of partition p under term: its state
// is loaded from JetStream (fenced: a later owner refuses it) into a fresh
// local store, its series and timers are restored, and its group mails
// and outbox resume. A state fenced by a later owner gives the partition
// up; anything else that fails is tried again, the readings waiting,
// while the partition is this instance's (ctx).
func (cn *clusterNode) open(ctx context.Context, p int, term uint64) (cluster.Handler, func(), error) {
	a, n := cn.a, cn.a.config().Store.NATS
	giveUp := func() { cn.ing.GiveUp(p, term) }
	ps, err := cluster.OpenState(ctx, cn.js, cluster.StateConfig{Prefix: n.Prefix, Replicas: n.Replicas}, p, term)
	if err != nil {
		if errors.Is(err, cluster.ErrFenced) {
			giveUp() // taken anew under a later term: this one cannot open it again
		}
		return nil, nil, fmt.Errorf("partition %d state: %w", p, err)
	}
	cn.mu.Lock()
	rs, cfg := cn.rules, cn.cfg // taken together: a reload swaps both
	cn.mu.Unlock()
	pp := &partitionPipeline{a: a, partition: p, ps: ps, rs: rs, cfg: cfg, giveUp: giveUp,
		path: filepath.Join(cn.dir, fmt.Sprintf("partition-%04d-term-%d.db", p, term)),
		log:  a.log.With("partition", p, "term", term)}
	for {
		err := pp.start(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, cluster.ErrFenced) || ctx.Err() != nil {
			giveUp()
			return nil, nil, fmt.Errorf("partition %d: %w", p, err)
		}
		pp.log.Error("partition not opened; trying again", "err", err)
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(time.Second):
		}
		if err := ps.Resync(ctx); err != nil && errors.Is(err, cluster.ErrFenced) {
			giveUp()
			return nil, nil, fmt.Errorf("partition %d: %w", p, err)
		}
	}
	cn.mu.Lock()
	cn.pipes[p] = pp
	now, nowCfg := cn.rules, cn.cfg
	cn.mu.Unlock()
	if now != pp.rs {
		// Reloaded while it opened: it takes the rules in force now (a
		// reload from here on finds it registered).
		pp.reload(now, seriesBudgets(nowCfg), removedRules(pp.rs, now))
	}
	// Registered, it hears of silences removed from now on; those removed
	// before (while no instance, or another, owned it) release their
	// first mails here.
	pp.tracker.RetryHeldIf(a.unsilenced, a.now())
	cn.refreshQueueMetrics()
	pp.log.Info("partition opened")
	return pp.handle, func() {
		cn.mu.Lock()
		delete(cn.pipes, p)
		cn.mu.Unlock()
		pp.close()
		cn.refreshQueueMetrics() // its mail is the next owner's to count
	}, nil
}

// troubled is a replica that gives the partition up when its state is
// fenced by a later owner or the local copy fell behind it, whoever wrote
// (a reading, a timer, a checkpoint, the mailer): the partition is then
// taken anew from its state, rather than left owned and failing. It says
// so once per partition pipeline.
type troubled struct {
	store.Replica
	giveUp func()
	log    *slog.Logger
	once   *[2]sync.Once // fenced, behind
}

func (r troubled) Commit(ws []store.Write) error {
	err := r.Replica.Commit(ws)
	switch {
	case errors.Is(err, cluster.ErrFenced):
		r.once[0].Do(func() {
			r.log.Warn("state write refused: a later owner holds this partition; stepping back", "err", err)
		})
		r.giveUp()
	case errors.Is(err, store.ErrReopen):
		r.once[1].Do(func() {
			r.log.Warn("local copy behind the partition's state: giving the partition up to take it anew", "err", err)
		})
		r.giveUp()
	}
	return err
}

// start opens the local store from the partition's state and runs the
// pipeline on it as a single alertd starts: series and timers restored,
// group mails and the outbox resumed. Its goroutines end with ctx (the
// partition given up) or close.
func (pp *partitionPipeline) start(ctx context.Context) error {
	a, rs, log := pp.a, pp.rs, pp.log
	db, err := store.OpenReplicated(pp.path, troubled{cluster.NewStoreReplica(pp.ps, stateCommitTimeout), pp.giveUp, log, &[2]sync.Once{}}, cluster.LoadInto(pp.ps))
	if err != nil {
		return err
	}
	fail := func(err error) error {
		_ = db.Close()
		return err
	}
	gate, ob := a.stateOn(db)
	tracker := a.newTracker(pp.cfg, log, replicaBatch)
	if _, err := tracker.Load(db, rs); err != nil {
		return fail(err)
	}
	var eng *engine.Engine
	nf := a.newNotifier(db, gate, a.silences, ob, func(name string) *rules.Rule { return eng.Rules().Rule(name) }, log, replicaBatch)
	eng = engine.New(engine.Options{Rules: rs, Tracker: tracker, Commit: nf, DB: db, Now: a.now, Log: log, Metrics: a.metrics,
		MaxCommit: replicaTransitions})
	if err := nf.RestoreGroups(); err != nil {
		return fail(err)
	}
	d := a.deliverer()
	d.Queue, d.Parallel = ob, nil // a.transport: the instance's pool
	d.OnIdle = func() {
		if cn := a.cluster.Load(); cn != nil {
			cn.refreshQueueMetrics()
		}
	}
	d.Log = log.With("component", "mailer")
	ctx, stop := context.WithCancel(ctx)
	pp.db, pp.tracker, pp.outbox, pp.notify, pp.eng, pp.stop = db, tracker, ob, nf, eng, stop
	run := func(f func(context.Context) error) {
		pp.wg.Go(func() {
			if err := f(ctx); err != nil {
				log.Error("partition pipeline", "err", err)
			}
		})
	}
	run(eng.RunTimers)
	run(nf.RunGroups)
	run(d.Run)
	run(func(ctx context.Context) error {
		return a.runPrune(ctx, gate, eng.Rules, replicaBatch)
	})
	every := pp.cfg.Store.CheckpointInterval.D()
	run(func(ctx context.Context) error { return eng.RunCheckpoints(ctx, every) })
	log.Debug("partition pipeline started", "series", tracker.Len(), "firing", tracker.Firing())
	return nil
}

// reload puts rs in force in the partition: its series of unchanged
// rules kept, of changed ones judged by the new rule from their next
// reading, of removed ones forgotten (from the state too).
func (pp *partitionPipeline) reload(rs *rules.Engine, budgets map[string]int, removed []string) int {
	n := pp.tracker.Reload(rs, budgets)
	pp.eng.SwapRules(rs)
	if err := alerts.ForgetRulesBatched(pp.db, removed, replicaBatch); err != nil {
		pp.log.Error("reload: forget the stored alerts of removed rules (the next owner forgets them too)", "err", err)
	}
	return n
}

// handle commits what a reading changes, then acknowledges it. A commit
// refused because a later owner holds the partition, or because the local
// copy of the state fell behind, is not acknowledged: the partition is
// given up (troubled) and the reading goes to whoever takes it next.
func (pp *partitionPipeline) handle(_ context.Context, r cluster.Reading) error {
	received := r.Stored
	if received.IsZero() {
		received = time.Now()
	}
	ev := event.Event{Source: "mqtt", Topic: r.Topic, Payload: r.Payload, Received: received}
	if err := pp.eng.Handle(&ev); err != nil {
		return err
	}
	return r.Ack()
}

// close stops the partition's timers, group mails and mailer, saves the
// last-seen times, closes its local store and removes it (the state
// stays in JetStream for the next owner).
func (pp *partitionPipeline) close() {
	pp.stop()
	pp.wg.Wait()
	pp.eng.SaveLastSeen()
	_ = pp.db.Close()
	_ = os.Remove(pp.path)
}
