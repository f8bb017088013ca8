// Package app wires alertd together from a loaded configuration and owns
// its lifecycle: the store, the sources (the MQTT subscriber, or the
// embedded broker when none is configured; the SMTP and HTTP ingress), the
// engine (rules and alert state), the notify stage, the mailer and the
// HTTP endpoint, and their reload on SIGHUP. Run stops everything when its
// context ends and closes the store last, so nothing queued is lost.
package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/broker"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/engine"
	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/httpin"
	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/notify"
	"github.com/alertd/alertd/internal/oauth"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/silence"
	"github.com/alertd/alertd/internal/smtpin"
	"github.com/alertd/alertd/internal/store"
	"github.com/alertd/alertd/internal/subscriber"
)

// SpoolFrom is the sender of spooled mail when no smtp section exists.
const SpoolFrom = "alertd <alertd@localhost>"

// App is one running alertd.
type App struct {
	cfg     *config.Config
	log     *slog.Logger
	metrics *metrics.Metrics
	now     func() time.Time
	from    string

	db        *store.DB
	engine    *rules.Engine
	tracker   *alerts.Tracker
	silences  silenceBackend // the store's, or the cluster's
	gate      *dedupe.Gate
	outbox    *outbox.Outbox
	transport mailer.Transport
	parallel  []mailer.Transport // smtp.max_connections - 1 more sessions
	tokens    *oauth.Source      // smtp.oauth2's, shared by every session

	eng    *engine.Engine   // rules → alerts → notify, built by Run
	notify *notify.Notifier // built by Run
	// cluster is this instance's part of the cluster (store.backend:
	// nats), once connected.
	cluster atomic.Pointer[clusterNode]

	// LogLevel, when set (by cmd/alertd), follows log.level on reload.
	LogLevel *slog.LevelVar
	reloadMu sync.Mutex // one reload at a time
	cfgMu    sync.Mutex // guards cfg and engine, replaced by a reload

	// Set by Run, for tests and health.
	sub     *subscriber.Subscriber
	smtpIn  *smtpin.Server
	httpIn  *httpin.Server
	sources sources // set by Run before it starts them
	started chan struct{}
	httpSrv *httpapi.Server
	brk     *broker.Broker
}

// New compiles the rules, opens the store and prepares the transport. It
// connects to nothing yet; Run does.
func New(cfg *config.Config, log *slog.Logger) (*App, error) {
	a := &App{cfg: cfg, log: log, metrics: metrics.New(), now: time.Now, from: SpoolFrom, started: make(chan struct{})}
	var err error
	if a.engine, err = compile(cfg, invalidPayloads{a.metrics, log}); err != nil {
		return nil, err
	}
	if len(a.engine.Rules()) == 0 {
		log.Warn("no rules configured: readings will be received but never alert")
	}
	if cfg.SMTP != nil {
		a.from = cfg.SMTP.From
	}
	if a.transport, err = a.newTransport(); err != nil {
		return nil, err
	}
	if cfg.SMTP != nil {
		for range cfg.SMTP.MaxConnections - 1 {
			t, err := a.newTransport()
			if err != nil {
				return nil, err
			}
			a.parallel = append(a.parallel, t)
		}
	}
	if clustered(cfg) {
		if cfg.SMTP != nil {
			// Every owned partition has a mailer of its own; they share
			// smtp.max_connections sessions.
			a.transport, a.parallel = mailer.NewPool(cfg.SMTP.MaxConnections, a.session, mailer.DefaultLinger), nil
		}
		return a, nil // each partition's state is opened as it is taken (cluster.go)
	}
	db, rec, err := store.Open(cfg.Store.Path)
	if err != nil {
		return nil, err
	}
	if rec != nil {
		logRecovery(log, cfg.Store.Path, rec)
	}
	a.db = db
	a.gate, a.outbox = a.stateOn(db)
	if a.silences, err = silence.Open(db, a.now(), a.reportQuarantine); err != nil {
		_ = db.Close()
		return nil, err
	}
	a.tracker = a.newTracker(cfg, log, 0)
	a.metrics.TrackSeries(a.tracker.Stats)
	a.tracker.Disconnected("mqtt") // silence is counted from the first connection
	n, err := a.tracker.Load(db, a.engine)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	// A silence removed while alertd was stopped (alertd silence remove
	// works on the store then) releases what it held.
	a.tracker.RetryHeldIf(a.unsilenced, a.now())
	if n > 0 {
		log.Info("alert state restored", "series", n, "firing", a.tracker.Firing())
	}
	a.refreshQuarantineMetrics()
	// Loading the configuration and the state leaves garbage many times
	// the size of what stays; give it back now rather than carry it on a
	// Raspberry Pi for the life of the process.
	debug.FreeOSMemory()
	return a, nil
}

// logRecovery says, loudly and once, that the store file was damaged, where
// it went and what of it the fresh store holds.
func logRecovery(log *slog.Logger, path string, rec *store.Recovery) {
	args := []any{"path", path, "moved_to", rec.MovedTo, "damage", rec.Finding, "salvaged", rec.Salvaged.String(),
		"unreadable_pages", rec.Salvaged.UnreadablePages, "unreadable_entries", rec.Salvaged.UnreadableEntries}
	if rec.Salvaged.Note != "" {
		args = append(args, "salvage_note", rec.Salvaged.Note)
	}
	log.Error("store file was damaged: moved it aside untouched and started a fresh store with what could be read from it", args...)
}

func (a *App) newTransport() (mailer.Transport, error) {
	cfg := a.config()
	s := cfg.SMTP
	if s == nil {
		return &mailer.Spool{Dir: cfg.Store.Spool}, nil
	}
	tlsCfg, err := clientTLS(s.TLS, s.Host)
	if err != nil {
		return nil, fmt.Errorf("smtp.tls: %w", err)
	}
	opts := mailer.SMTPOptions{
		Host: s.Host, Port: s.Port, Security: mailer.Security(s.Security), Auth: s.Auth,
		Username: s.Username, Password: s.Password.Reveal(), AllowInsecureAuth: s.AllowInsecureAuth,
		Helo: s.Helo, Timeout: s.Timeout.D(), TLSConfig: tlsCfg,
	}
	if s.OAuth2 != nil {
		// One token source for every session: a refresh token that
		// rotates must be used by one refresher, not one per session.
		if a.tokens == nil {
			a.tokens = oauth.NewSource(s.OAuth2, nil, a.log.With("component", "oauth2"))
		}
		opts.Tokens = a.tokens
	}
	return mailer.NewSMTPTransport(opts, a.log.With("component", "smtp")), nil
}

// config is the configuration in force: a reload replaces it while the
// stages read it.
func (a *App) config() *config.Config {
	a.cfgMu.Lock()
	defer a.cfgMu.Unlock()
	return a.cfg
}

// unsilenced says no silence covers rule on topic now.
func (a *App) unsilenced(rule, topic string) bool {
	return a.silences.Silenced(rule, topic, a.now()).IsZero()
}

// session is one more SMTP session for a pool. Its settings were checked
// when the first session was built; a TLS file gone since is each send's
// error, not a crash.
func (a *App) session() mailer.Transport {
	t, err := a.newTransport()
	if err != nil {
		return failedTransport{err}
	}
	return t
}

// failedTransport is a session that could not be built: every send fails
// with why.
type failedTransport struct{ err error }

func (f failedTransport) Send(context.Context, mailer.Envelope, []byte) (mailer.Outcome, error) {
	return mailer.Outcome{}, &mailer.Error{Kind: mailer.KindConfig, Step: "connect", Err: f.err}
}

func (f failedTransport) Close() error { return nil }

// Run serves until ctx ends, then shuts down in order and returns nil, or
// returns the first fatal error.
func (a *App) Run(ctx context.Context) (err error) {
	if clustered(a.cfg) {
		return a.runCluster(ctx)
	}
	defer func() {
		if cerr := a.db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close store: %w", cerr)
		}
	}()
	brokerURL := a.cfg.MQTT.Broker
	if brokerURL == "" {
		if a.brk, err = broker.Start(a.cfg.MQTT.Listen, a.log.With("component", "broker")); err != nil {
			return err
		}
		defer a.brk.Close()
		brokerURL = dialable(a.brk.URL())
		a.log.Info("embedded MQTT broker listening (no mqtt.broker configured)", "url", brokerURL)
	}
	a.notify = a.newNotifier(a.db, a.gate, a.silences, a.outbox,
		func(name string) *rules.Rule { return a.eng.Rules().Rule(name) }, a.log, 0)
	a.eng = engine.New(engine.Options{
		Rules: a.engine, Tracker: a.tracker, Commit: a.notify, DB: a.db, Now: a.now, Log: a.log, Metrics: a.metrics,
	})
	if err := a.notify.RestoreGroups(); err != nil {
		return err
	}
	sub, err := a.newSubscriber(brokerURL)
	if err != nil {
		return err
	}
	a.sub = sub
	if t := a.cfg.MQTT.StateTopic; t != "" {
		a.notify.StateTopic, a.notify.Publish = t, sub.Publish
		if a.cfg.MQTT.HomeAssistantDiscovery {
			host, _ := os.Hostname()
			a.notify.EnableDiscovery(notify.Discovery{Prefix: a.cfg.MQTT.DiscoveryPrefix, StatusTopic: statusTopic(a.cfg), Node: host})
		}
	}
	smtpIn, httpIn, err := a.listenIngress()
	if err != nil {
		return err
	}
	a.smtpIn, a.httpIn = smtpIn, httpIn
	g, gctx := errgroup.WithContext(ctx)
	srcs := sources{{name: "mqtt", ready: sub.Ready, why: "not subscribed yet", reason: sub.Why}}
	if smtpIn != nil {
		var up serving
		srcs = append(srcs, source{name: "smtp", ready: up.ready, why: "not serving"})
		g.Go(func() error { return up.run(func() error { return smtpIn.Run(gctx) }) })
		a.log.Info("smtp ingress listening", "addr", smtpIn.Addr().String())
	}
	if httpIn != nil {
		var up serving
		srcs = append(srcs, source{name: "http", ready: up.ready, why: "not serving"})
		g.Go(func() error { return up.run(func() error { return httpIn.Run(gctx) }) })
		a.log.Info("http ingress listening", "addr", httpIn.Addr())
	}
	for _, s := range srcs {
		a.metrics.SourceUp(s.name, s.ready)
	}
	a.sources = srcs
	pf, err := a.newPreflight()
	if err != nil {
		closeAll(smtpIn, httpIn)
		return err
	}
	if a.cfg.HTTP.Listen != "" && a.cfg.HTTP.Listen != "off" {
		if a.httpSrv, err = httpapi.Listen(a.cfg.HTTP.Listen, httpapi.Options{
			Registry: a.metrics.Registry, Health: srcs.health, Checks: pf.checks, Queue: a.outbox, Reloader: a, Status: a.Status,
			Silences: silenceAdmin{a.silences, a.ruleNames, func(rule string) { a.tracker.RetryHeld(rule, a.now()) }},
			Log:      a.log,
		}); err != nil {
			closeAll(smtpIn, httpIn)
			return err
		}
		g.Go(func() error { return a.httpSrv.Run(gctx) })
	}
	g.Go(func() error { pf.run(gctx); return nil })
	g.Go(func() error { return sub.Run(gctx) })
	g.Go(func() error { return a.eng.RunTimers(gctx) })
	g.Go(func() error { return a.notify.RunGroups(gctx) })
	g.Go(func() error { return a.runPrune(gctx, a.gate, a.eng.Rules, 1000) })
	if sc := a.selfCheck(srcs); sc != nil {
		g.Go(func() error { return sc.Run(gctx) })
	}
	// What the goroutines read of the configuration is read here, before
	// Started lets a reload replace it.
	checkpoint, deliverer := a.cfg.Store.CheckpointInterval.D(), a.deliverer()
	g.Go(func() error { return a.eng.RunCheckpoints(gctx, checkpoint) })
	g.Go(func() error { return deliverer.Run(gctx) })
	a.log.Info("alertd running", "rules", len(a.engine.Rules()), "broker", brokerURL, "mail", a.mailTarget())
	close(a.started)
	g.Go(func() error { releaseStartGarbage(gctx); return nil })
	err = g.Wait()
	a.eng.SaveLastSeen() // now that no reading changes them
	a.log.Info("alertd stopped")
	return err
}

// releaseStartGarbage gives back, once, what starting left behind after
// New's FreeOSMemory: the first connection, subscription and preflight
// allocate buffers they drop, and an idle alertd on a Pi should not keep
// their pages.
func releaseStartGarbage(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
		debug.FreeOSMemory()
	}
}

func (a *App) mailTarget() string {
	if a.cfg.SMTP == nil {
		return ".eml files in " + a.cfg.Store.Spool
	}
	return fmt.Sprintf("smtp %s:%d (%s)", a.cfg.SMTP.Host, a.cfg.SMTP.Port, a.cfg.SMTP.Security)
}

func (a *App) newSubscriber(brokerURL string) (*subscriber.Subscriber, error) {
	m := a.cfg.MQTT
	var tlsCfg *tls.Config
	if isTLSScheme(brokerURL) {
		c, err := clientTLS(m.TLS, hostOf(brokerURL))
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls: %w", err)
		}
		tlsCfg = c
	}
	return subscriber.New(subscriber.Options{
		Broker: brokerURL, ClientID: m.ClientID, Username: m.Username, Password: m.Password.Reveal(),
		QoS: byte(m.QoS), TLS: tlsCfg, Filters: a.engine.Filters(), Log: a.log.With("component", "mqtt"),
		Stale: a.sessionFilters(), Held: a.saveSessionFilters, StatusTopic: statusTopic(a.cfg),
		Connected: func(up bool) {
			if up {
				a.metrics.MQTTConnected.Set(1)
				a.tracker.Connected("mqtt", a.now())
			} else {
				a.metrics.MQTTConnected.Set(0)
				a.tracker.Disconnected("mqtt")
			}
		},
	}, a.eng), nil
}

func (a *App) deliverer() *mailer.Deliverer {
	retry := mailer.Retry{Initial: config.DefaultRetryInitial, Max: config.DefaultRetryMax, GiveUpAfter: config.DefaultRetryGiveUpAfter}
	if s := a.config().SMTP; s != nil {
		retry = mailer.Retry{Initial: s.Retry.Initial.D(), Max: s.Retry.Max.D(), GiveUpAfter: s.Retry.GiveUpAfter.D()}
	}
	d := &mailer.Deliverer{
		Queue: a.outbox, Transport: a.transport, Parallel: a.parallel, Retry: retry, Metrics: a.metrics,
		Log: a.log.With("component", "mailer"), Now: a.now, Linger: mailer.DefaultLinger,
	}
	d.OnIdle = a.refreshQueueMetrics
	return d
}

func (a *App) refreshQueueMetrics() {
	st, err := a.outbox.Stats()
	if err != nil {
		return
	}
	a.setQueueMetrics(st.Pending, st.Oldest)
	a.refreshQuarantineMetrics()
}

// setQueueMetrics sets alertd_mail_queue_depth and
// alertd_mail_oldest_pending_seconds.
func (a *App) setQueueMetrics(pending int, oldest time.Time) {
	a.metrics.QueueDepth.Set(float64(pending))
	age := 0.0
	if !oldest.IsZero() {
		age = a.now().Sub(oldest).Seconds()
	}
	a.metrics.OldestPending.Set(age)
}

// dialable turns a listen address such as tcp://[::]:18830 into one a
// client can connect to.
func dialable(url string) string {
	host, port, err := net.SplitHostPort(url[len("tcp://"):])
	if err != nil {
		return url
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "tcp://" + net.JoinHostPort(host, port)
}

// Handled is how many events the pipeline has fully processed.
func (a *App) Handled() uint64 {
	if a.eng == nil {
		return 0
	}
	return a.eng.Handled()
}

// Metrics exposes the registry (tests read counters from it).
func (a *App) Metrics() *metrics.Metrics { return a.metrics }

// Started is closed once Run has started every component.
func (a *App) Started() <-chan struct{} { return a.started }

// Ready reports whether every source is ready (MQTT subscribed, the
// listeners serving).
func (a *App) Ready() bool { return a.sources.ready() }

// HTTPAddr is the bound HTTP address, once started ("" when off).
func (a *App) HTTPAddr() string {
	if a.httpSrv == nil {
		return ""
	}
	return a.httpSrv.Addr()
}

// BrokerURL is the embedded broker's URL, once started ("" when external).
func (a *App) BrokerURL() string {
	if a.brk == nil {
		return ""
	}
	return dialable(a.brk.URL())
}

// closeAll closes the device listeners that were bound (nil ones skipped).
func closeAll(s *smtpin.Server, h *httpin.Server) {
	if s != nil {
		_ = s.Close()
	}
	if h != nil {
		_ = h.Close()
	}
}

// SMTPIngressAddr is the bound SMTP ingress address ("" when off).
func (a *App) SMTPIngressAddr() string {
	if a.smtpIn == nil {
		return ""
	}
	return a.smtpIn.Addr().String()
}

// HTTPIngressAddr is the bound HTTP ingress address ("" when off).
func (a *App) HTTPIngressAddr() string {
	if a.httpIn == nil {
		return ""
	}
	return a.httpIn.Addr()
}

func (a *App) footer() notify.Footer { return Footer(a.config()) }

// Footer is what every mail of cfg ends with: this host, the status page,
// and the configuration file for the silence command.
func Footer(cfg *config.Config) notify.Footer {
	host, _ := os.Hostname()
	file := cfg.File
	if abs, err := filepath.Abs(file); err == nil && file != "" {
		file = abs
	}
	return notify.Footer{Host: host, StatusURL: cfg.HTTP.ExternalURL, Config: file}
}

// statusTopic is where alertd says online/offline: <state_topic>/status,
// when state_topic is set.
func statusTopic(cfg *config.Config) string {
	if cfg.MQTT.StateTopic == "" {
		return ""
	}
	return cfg.MQTT.StateTopic + "/status"
}
