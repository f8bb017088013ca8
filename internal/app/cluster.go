package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/cluster"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/engine"
	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/notify"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/silence"
	"github.com/alertd/alertd/internal/store"
)

// clustered says whether alertd runs as one of several instances sharing
// a JetStream cluster (store.backend: nats).
func clustered(cfg *config.Config) bool { return cfg.Store.Backend == config.BackendNATS }

// stateCommitTimeout bounds one commit to a partition's state: a NATS
// leader election takes about a second; beyond a few, the reading is
// handed back and retried rather than held.
const stateCommitTimeout = 5 * time.Second

// runCluster is Run for store.backend: nats. Devices publish to
// nats-server's MQTT listener; JetStream spreads their readings over
// partitions, and this instance runs alertd's pipeline (rules, alert
// state, notify, outbox, mailer) once for each partition it owns, over a
// local store whose every commit is first committed, fenced by the
// partition's term, to the partition's state in JetStream. A partition
// taken over from a dead instance is rebuilt from that state, its timers
// and queued mails included.
func (a *App) runCluster(ctx context.Context) error {
	n := a.cfg.Store.NATS
	// A rule's rate limit is shared by the partitions: each may send its
	// share, rounded up (docs/cluster.md, "Rate limits").
	split, err := compile(splitRateLimits(a.cfg, n.Partitions), invalidPayloads{a.metrics, a.log})
	if err != nil {
		return err
	}
	// The local copies of the partitions' states are rebuilt as the
	// partitions are taken: what an earlier run left is stale.
	dir := filepath.Join(filepath.Dir(a.cfg.Store.Path), "partitions")
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	// /healthz and /metrics answer while NATS is still out of reach.
	var conn atomic.Pointer[nats.Conn]
	var ingesting serving
	var owned atomic.Pointer[cluster.Ingest]
	srcs := sources{{name: "nats", why: "not connected to NATS", ready: func() bool {
		nc := conn.Load()
		return nc != nil && nc.IsConnected() && ingesting.ready()
	}}}
	for _, s := range srcs {
		a.metrics.SourceUp(s.name, s.ready)
	}
	a.sources = srcs
	shared := &sharedSilences{}
	a.silences = shared
	a.metrics.PartitionsOwned(func() int {
		if ing := owned.Load(); ing != nil {
			return len(ing.Owned())
		}
		return 0
	})
	pf, err := a.newPreflight()
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	if a.cfg.HTTP.Listen != "" && a.cfg.HTTP.Listen != "off" {
		if a.httpSrv, err = httpapi.Listen(a.cfg.HTTP.Listen, httpapi.Options{
			Registry: a.metrics.Registry, Health: srcs.health, Checks: pf.checks, Status: a.Status, Reloader: a, Queue: partitionQueue{a},
			Silences: silenceAdmin{shared, a.ruleNames, nil}, Log: a.log,
		}); err != nil {
			return err
		}
		g.Go(func() error { return a.httpSrv.Run(gctx) })
	}
	g.Go(func() error { pf.run(gctx); return nil })
	g.Go(func() error {
		nc, err := a.connectNATS(gctx, n)
		if err != nil {
			if gctx.Err() != nil {
				return nil // stopped while waiting for NATS
			}
			return err
		}
		defer nc.Close()
		conn.Store(nc)
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("store.nats: %w", err)
		}
		ing, err := cluster.New(cluster.Config{
			JS: js, Instance: n.Instance, Filters: a.engine.Filters(), Partitions: n.Partitions, Replicas: n.Replicas,
			Prefix: n.Prefix, LeaseTTL: n.LeaseTTL.D(), Logger: a.log.With("component", "cluster"),
		})
		if err != nil {
			return fmt.Errorf("store.nats: %w", err)
		}
		owned.Store(ing)
		cn := &clusterNode{a: a, ing: ing, js: js, rules: split, budgets: seriesBudgets(a.cfg), dir: dir, pipes: map[int]*partitionPipeline{}}
		// The silences are loaded before any partition is taken: a
		// silenced alert must not be mailed for want of them.
		sils, err := cn.openSilences(gctx)
		if err != nil {
			return nil // stopped while waiting for NATS
		}
		shared.p.Store(sils)
		g.Go(func() error { return sils.Run(gctx) })
		a.cluster.Store(cn)
		a.log.Info("alertd running in cluster mode", "instance", ing.Instance(), "rules", len(a.engine.Rules()),
			"nats", strings.Join(n.URLs, ","), "partitions", ing.Partitions(), "mail", a.mailTarget())
		return ingesting.run(func() error { return ing.RunPartitions(gctx, cn.open) })
	})
	close(a.started)
	err = g.Wait()
	if p, ok := a.transport.(*mailer.Pool); ok {
		_ = p.Shutdown() // every partition's mailer has stopped
	}
	a.log.Info("alertd stopped")
	return err
}

// connectNATS opens the connection of store.nats, TLS verified unless the
// configuration turns it off. NATS down at start is waited for, as a
// broker is: reported once, retried every two seconds until ctx ends.
func (a *App) connectNATS(ctx context.Context, n *config.NATSStore) (*nats.Conn, error) {
	tc, err := NATSTLS(n)
	if err != nil {
		return nil, fmt.Errorf("store.nats.tls: %w", err)
	}
	for attempt := 1; ; attempt++ {
		nc, err := cluster.Connect(ctx, n.URLs, n.CredentialsFile, tc, "alertd "+n.Instance)
		if err == nil {
			if attempt > 1 {
				a.log.Info("connected to NATS", "urls", strings.Join(n.URLs, ","))
			}
			return nc, nil
		}
		if attempt == 1 {
			a.log.Error("store.nats: cannot connect yet; retrying every 2s", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// NATSTLS is store.nats.tls as a verifying client configuration (the
// system roots plus ca_file, a client certificate when given), or nil
// when there is no tls section: a tls:// URL then verifies against the
// system roots. The server name comes from each URL. Errors name the key
// (ca_file, cert_file/key_file) first.
func NATSTLS(n *config.NATSStore) (*tls.Config, error) {
	if n == nil || n.TLS == nil {
		return nil, nil
	}
	return clientTLS(*n.TLS, "")
}

// splitRateLimits returns cfg with every rule's rate limit divided among
// n partitions, rounded up: no coordination between partitions, at most
// n-1 mails more than the limit per window, and a rule whose alerts all
// fall in one partition gets only its share.
func splitRateLimits(cfg *config.Config, n int) *config.Config {
	c := *cfg
	c.Rules = make([]config.Rule, len(cfg.Rules))
	for i, r := range cfg.Rules {
		if r.RateLimit.N > 0 && n > 1 {
			r.RateLimit.N = (r.RateLimit.N + n - 1) / n
		}
		c.Rules[i] = r
	}
	return &c
}

// replicaBatch is how many series or entries a partition's housekeeping
// (checkpoints, pruning) writes per transaction: each up to two keys,
// within what one commit to the partition's state carries.
const replicaBatch = store.MaxReplicaWrites / 2

// replicaTransitions is how many transitions of one reading a partition
// commits together: each writes a few keys (its record, the dedupe
// window, a mail or a group item), well within one commit to the state
// even at ten each.
const replicaTransitions = store.MaxReplicaWrites / 10

// clusterNode is this instance's part of the cluster once connected: the
// partitions it owns, each with its pipeline, and the silences every
// instance shares.
type clusterNode struct {
	a     *App
	ing   *cluster.Ingest
	js    jetstream.JetStream
	rules *rules.Engine // with each rate limit split among the partitions
	dir   string        // the partitions' local stores

	mu      sync.Mutex
	pipes   map[int]*partitionPipeline // the partitions open now
	budgets map[string]int             // limits.* per rule, as rules: a reload swaps both

	statusMu   sync.Mutex
	lastStatus *httpapi.StatusCluster // shared by the pages of statusFresh: read only
	statusAt   time.Time
}

// reload puts cfg's rules in force in every owned partition, as a single
// alertd's reload does with its one store, after setting the ingest
// stream's topics to the new rules' filters. A partition opening
// meanwhile takes them as it registers (open). It returns how many
// alerts of removed rules were forgotten.
func (cn *clusterNode) reload(cfg *config.Config, removed []string) (int, error) {
	split, err := compile(splitRateLimits(cfg, cfg.Store.NATS.Partitions), invalidPayloads{cn.a.metrics, cn.a.log})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cn.ing.SetFilters(ctx, split.Filters()); err != nil {
		return 0, fmt.Errorf("store.nats: the ingest stream's topics: %w", err)
	}
	cn.mu.Lock()
	cn.rules, cn.budgets = split, seriesBudgets(cfg)
	pipes := make([]*partitionPipeline, 0, len(cn.pipes))
	for _, pp := range cn.pipes {
		pipes = append(pipes, pp)
	}
	cn.mu.Unlock()
	forgotten := 0
	for _, pp := range pipes {
		forgotten += pp.reload(split, seriesBudgets(cfg), removed)
	}
	return forgotten, nil
}

// removedRules is the names of old's rules that rs does not have.
func removedRules(old, rs *rules.Engine) []string {
	var out []string
	for _, r := range old.Rules() {
		if rs.Rule(r.Name) == nil {
			out = append(out, r.Name)
		}
	}
	return out
}

// openSilences opens the cluster's silences, trying again every two
// seconds while NATS cannot answer, until ctx ends. A silence removed
// before its end releases what it held back in every owned partition.
func (cn *clusterNode) openSilences(ctx context.Context) (*cluster.Silences, error) {
	n := cn.a.cfg.Store.NATS
	for attempt := 1; ; attempt++ {
		s, err := cluster.OpenSilences(ctx, cn.js, cluster.SilencesConfig{
			Prefix: n.Prefix, Replicas: n.Replicas, Logger: cn.a.log.With("component", "silences"),
			OnRemoved: func(si silence.Silence) {
				for _, pp := range cn.pipelines() {
					pp.tracker.RetryHeld(si.Rule, cn.a.now())
				}
			},
		})
		if err == nil {
			return s, nil
		}
		if attempt == 1 {
			cn.a.log.Error("silences not loaded yet; retrying every 2s", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// pipelines is the partitions' pipelines open now, by partition.
func (cn *clusterNode) pipelines() []*partitionPipeline {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	out := make([]*partitionPipeline, 0, len(cn.pipes))
	for p := range cn.pipes {
		out = append(out, cn.pipes[p])
	}
	slices.SortFunc(out, func(x, y *partitionPipeline) int { return x.partition - y.partition })
	return out
}

// sharedSilences is the cluster's silences once loaded: before, nothing
// is silenced and nothing can be added.
type sharedSilences struct {
	p atomic.Pointer[cluster.Silences]
}

var errSilencesNotLoaded = errors.New("not connected to NATS yet: the silences are not loaded")

func (s *sharedSilences) List(now time.Time) []silence.Silence {
	if c := s.p.Load(); c != nil {
		return c.List(now)
	}
	return []silence.Silence{}
}

func (s *sharedSilences) Silenced(rule, series string, now time.Time) time.Time {
	if c := s.p.Load(); c != nil {
		return c.Silenced(rule, series, now)
	}
	return time.Time{}
}

func (s *sharedSilences) Add(si silence.Silence) (silence.Silence, error) {
	if c := s.p.Load(); c != nil {
		return c.Add(si)
	}
	return silence.Silence{}, errSilencesNotLoaded
}

func (s *sharedSilences) Remove(id uint64) error {
	if c := s.p.Load(); c != nil {
		return c.Remove(id)
	}
	return errSilencesNotLoaded
}

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
	a, n := cn.a, cn.a.cfg.Store.NATS
	giveUp := func() { cn.ing.GiveUp(p, term) }
	ps, err := cluster.OpenState(ctx, cn.js, cluster.StateConfig{Prefix: n.Prefix, Replicas: n.Replicas}, p, term)
	if err != nil {
		if errors.Is(err, cluster.ErrFenced) {
			giveUp() // taken anew under a later term: this one cannot open it again
		}
		return nil, nil, fmt.Errorf("partition %d state: %w", p, err)
	}
	cn.mu.Lock()
	rs := cn.rules
	cn.mu.Unlock()
	pp := &partitionPipeline{a: a, partition: p, ps: ps, rs: rs, giveUp: giveUp,
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
	if pp.rs != cn.rules {
		// Reloaded while it opened: it takes the rules in force now.
		pp.reload(cn.rules, cn.budgets, removedRules(pp.rs, cn.rules))
	}
	cn.mu.Unlock()
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
	tracker := a.newTracker(log, replicaBatch)
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
	every := a.cfg.Store.CheckpointInterval.D()
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

// refreshQueueMetrics sets the outbox gauges to the sum of the owned
// partitions' outboxes: as each partition's mailer goes idle, and as a
// partition is taken or given up. A partition whose outbox cannot be
// read now (closing) is left out.
func (cn *clusterNode) refreshQueueMetrics() {
	pending, oldest := 0, time.Time{}
	for _, p := range cn.pipelines() {
		st, err := p.outbox.Stats()
		if err != nil {
			continue
		}
		pending += st.Pending
		if !st.Oldest.IsZero() && (oldest.IsZero() || st.Oldest.Before(oldest)) {
			oldest = st.Oldest
		}
	}
	cn.a.setQueueMetrics(pending, oldest)
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

// statusFresh is how long a read of the cluster's status serves the
// status page: each read asks JetStream once per partition, and every
// open page refreshes itself.
const statusFresh = 2 * time.Second

// status is the cluster as this instance sees it, for the status page:
// its lease view and each partition's lag, read within two seconds, at
// most once per statusFresh.
func (cn *clusterNode) status() *httpapi.StatusCluster {
	cn.statusMu.Lock()
	defer cn.statusMu.Unlock()
	if cn.lastStatus != nil && time.Since(cn.statusAt) < statusFresh {
		c := *cn.lastStatus // the page may fill in its empty lists
		return &c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cs, err := cn.ing.Status(ctx)
	st := &httpapi.StatusCluster{Instance: cs.Instance, Members: cs.Members, Stream: cs.Stream, Messages: cs.Messages}
	if err != nil {
		st.Error = err.Error()
	}
	for _, p := range cs.Partitions {
		st.Partitions = append(st.Partitions, httpapi.StatusPartition{
			Partition: p.Partition, Owner: p.Owner, Term: p.Term, Pending: p.Pending, AckPending: p.AckPending})
	}
	cn.lastStatus, cn.statusAt = st, time.Now()
	c := *st
	return &c
}

// openClusterSilences reaches the cluster's silences for `alertd silence`:
// straight from NATS, whether any instance runs or not. Every instance
// watching the bucket applies a change within a round trip.
func openClusterSilences(cfg *config.Config) (Silences, string, error) {
	n := cfg.Store.NATS
	tc, err := NATSTLS(n)
	if err != nil {
		return nil, "", fmt.Errorf("store.nats.tls: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	host, _ := os.Hostname()
	nc, err := cluster.Connect(ctx, n.URLs, n.CredentialsFile, tc, "alertd silence on "+host)
	if err != nil {
		return nil, "", err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, "", fmt.Errorf("JetStream: %w", err)
	}
	s, err := cluster.OpenSilences(ctx, js, cluster.SilencesConfig{Prefix: n.Prefix, Replicas: n.Replicas})
	if err != nil {
		nc.Close()
		return nil, "", err
	}
	admin := silenceAdmin{s, func() []string { return ruleNames(cfg) }, nil}
	return &natsSilences{admin, nc}, "NATS at " + nc.ConnectedUrlRedacted(), nil
}

type natsSilences struct {
	silenceAdmin
	nc *nats.Conn
}

func (s *natsSilences) Close() error { s.nc.Close(); return nil }
