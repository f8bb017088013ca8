package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alertd/alertd/internal/cluster"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/silence"
)

// clusterNode is this instance's part of the cluster once connected: the
// partitions it owns, each with its pipeline, and the silences every
// instance shares.
type clusterNode struct {
	a     *App
	ing   *cluster.Ingest
	js    jetstream.JetStream
	rules *rules.Engine // with each rate limit split among the partitions
	dir   string        // the partitions' local stores

	mu    sync.Mutex
	pipes map[int]*partitionPipeline // the partitions open now
	cfg   *config.Config             // what rules were compiled from: a reload swaps both

	gaugeMu sync.Mutex // refreshQueueMetrics

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
	cn.rules, cn.cfg = split, cfg
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
	n := cn.a.config().Store.NATS
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

// refreshQueueMetrics sets the outbox gauges to the sum of the owned
// partitions' outboxes: as each partition's mailer goes idle, and as a
// partition is taken or given up. A partition whose outbox cannot be
// read now (closing) is left out.
func (cn *clusterNode) refreshQueueMetrics() {
	// One at a time: two mailers going idle together would otherwise set
	// the gauges in either order, the later one from an older sum (a
	// mail the other had just removed), and nothing sets them again until
	// the next mail.
	cn.gaugeMu.Lock()
	defer cn.gaugeMu.Unlock()
	cn.a.setQueueMetrics(cn.outboxTotals())
}

// outboxTotals is how many mails wait in the owned partitions' outboxes
// and when the oldest was queued (zero: none waits). A partition whose
// outbox cannot be read now (closing) is left out.
func (cn *clusterNode) outboxTotals() (pending int, oldest time.Time) {
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
	return pending, oldest
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
