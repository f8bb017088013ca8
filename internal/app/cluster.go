package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/alertd/alertd/internal/cluster"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/mailer"
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
	selfCfg := a.cfg
	g.Go(func() error { return a.runSelfAlerts(gctx, selfCfg, srcs, a.oldestMail) })
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
		cn := &clusterNode{a: a, ing: ing, js: js, rules: split, cfg: a.cfg, dir: dir, pipes: map[int]*partitionPipeline{}}
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
// commits together: each writes about four keys (its record, the dedupe
// window, a mail or a group item), so 90 write about 360, well within
// one commit to the state (900).
const replicaTransitions = store.MaxReplicaWrites / 10
