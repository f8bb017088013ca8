// Command alertd turns MQTT sensor readings into alert e-mails.
//
//	alertd run   -config FILE   run until SIGINT/SIGTERM
//	alertd check -config FILE   validate the configuration, connect nowhere
//	alertd send-test -config FILE [-to ADDR]   send one test mail, showing the SMTP session
//	alertd test -config FILE -topic T -payload P [-at TIME] | -events FILE   what the rules would do
//	alertd reload -config FILE  make the running alertd re-read FILE (or kill -HUP)
//	alertd outbox list|retry|drop -config FILE [ID|-all-dead]
//	alertd silence add|list|remove -config FILE [...]
//	alertd store check|salvage -config FILE [-from DAMAGED_FILE]
//	alertd status -config FILE [-json]
//	alertd cluster status -config FILE [-json]
//	alertd version
//
// Exit status: 0 success, 1 a fatal error, 2 a usage or configuration error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	_ "time/tzdata" // timezone: works in a distroless image, which has no zoneinfo

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/alertd/alertd/internal/app"
	"github.com/alertd/alertd/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

const usage = `usage: alertd <command> [flags]

commands:
  run     -config FILE   run the service until SIGINT or SIGTERM
  check   -config FILE   validate FILE without connecting anywhere
  send-test -config FILE [-to ADDR]
                         send one test mail, printing the SMTP session
  test    -config FILE -topic T -payload P|@FILE [-payload ...] [-at TIME] [-every 1m]
  test    -config FILE -events FILE [-at TIME]
                         what the rules would do with readings, and the mail they
                         would send, without a broker, a store or the network
  reload  -config FILE   make the running alertd re-read FILE (as SIGHUP does)
  outbox  list|retry|drop -config FILE [ID|-all-dead]
                         show or fix the mail queue (running or stopped)
  silence add|list|remove -config FILE [-rule NAME -series TOPIC -for 2h -comment TEXT | ID]
                         hold back a rule's mails for a while
  store   check|salvage -config FILE [-from DAMAGED_FILE]
                         check the store file, or recover a damaged one now
  health  -config FILE   exit 0 if the running alertd is healthy (its /healthz)
  status  -config FILE [-json]
                         what is firing, held back, silenced, queued (as GET / shows)
  cluster status -config FILE [-json]
                         instances, partition owners and lag on NATS (store.backend: nats)
  oauth   login -config FILE
                         sign in once for smtp.oauth2 (Microsoft 365, Gmail)
  version                print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "send-test":
		return cmdSendTest(args[1:], stdout, stderr)
	case "test":
		return cmdTest(args[1:], stdout, stderr)
	case "reload":
		return cmdReload(args[1:], stdout, stderr)
	case "outbox":
		return cmdOutbox(args[1:], stdout, stderr)
	case "silence":
		return cmdSilence(args[1:], stdout, stderr)
	case "store":
		return cmdStore(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "cluster":
		return cmdCluster(args[1:], stdout, stderr)
	case "oauth":
		return cmdOAuth(args[1:], stdout, stderr)
	case "health":
		return cmdHealth(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "alertd", versionString())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "alertd: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// configFlag parses "-config FILE" (or --config) for a command.
func configFlag(name string, args []string, stderr io.Writer) (string, int) {
	fs := newFlags(name, stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", 0
		}
		return "", 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "alertd %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", 2
	}
	if *path == "" {
		fmt.Fprintf(stderr, "alertd %s: -config FILE is required (try rules.example.yaml)\n", name)
		return "", 2
	}
	return *path, -1
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	path, code := configFlag("check", args, stderr)
	if code >= 0 {
		return code
	}
	cfg, err := checkConfig(path)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	if cfg.Store.Backend == config.BackendNATS {
		fmt.Fprintln(stdout, clusterSummary(cfg))
		return 0
	}
	fmt.Fprintln(stdout, app.Summary(cfg))
	return 0
}

// reportConfigError prints every positioned error, one per line (exit 2),
// or one line for a file that could not be read at all (exit 1).
func reportConfigError(err error, stderr io.Writer) int {
	var errs config.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		return 2
	}
	fmt.Fprintln(stderr, "alertd:", err)
	return 1
}

func cmdRun(args []string, stderr io.Writer) int {
	path, code := configFlag("run", args, stderr)
	if code >= 0 {
		return code
	}
	cfg, err := app.Check(path)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	// Caught from the start: a SIGHUP while the store opens must not kill
	// alertd (the default action); it waits for the service to run.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	level := new(slog.LevelVar)
	logger := newLogger(cfg.Log, level, stderr)
	routeLibraryLogs(logger)
	a, err := app.New(cfg, logger)
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	a.LogLevel = level // log.level reloads live
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP re-reads the configuration, as Mosquitto, Prometheus and
	// Postfix do; Reload logs its own outcome.
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case <-a.Started():
					_, _ = a.Reload()
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	if err := a.Run(ctx); err != nil {
		logger.Error("stopped on error", "err", err)
		return 1
	}
	return 0
}

func newLogger(c config.Log, level *slog.LevelVar, w io.Writer) *slog.Logger {
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// routeLibraryLogs sends paho's own log lines (package globals) to slog.
func routeLibraryLogs(l *slog.Logger) {
	h := l.With("component", "paho").Handler()
	mqtt.ERROR = slog.NewLogLogger(shutdownNoise{h}, slog.LevelError)
	mqtt.CRITICAL = slog.NewLogLogger(h, slog.LevelError)
	// paho's warnings are about its own bookkeeping ("memorystore del:
	// message 1 not found" at every start); what matters to an operator,
	// such as a lost connection, alertd logs itself.
	mqtt.WARN = slog.NewLogLogger(h, slog.LevelDebug)
	log.SetOutput(slog.NewLogLogger(l.Handler(), slog.LevelInfo).Writer())
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// shutdownNoise lowers to debug the two errors paho logs at every clean
// disconnect (the broker closing the connection after DISCONNECT, as it
// should): an operator must not read a clean stop as a failure.
type shutdownNoise struct{ slog.Handler }

var pahoShutdownErrors = []string{"error triggered EOF", "disconnection already in progress",
	// paho's line for each failed connection attempt (every second while
	// the broker is away): alertd logs the reason itself, in plain words,
	// once per change.
	"connect got error", "[client]   dial ", "[client]   tls: ", "[client]   x509: ", "[client]   websocket",
	"CONNACK was not CONN_ACCEPTED"}

func (h shutdownNoise) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, l) || h.Handler.Enabled(ctx, slog.LevelDebug)
}

func (h shutdownNoise) Handle(ctx context.Context, r slog.Record) error {
	for _, s := range pahoShutdownErrors {
		if strings.Contains(r.Message, s) {
			r.Level = slog.LevelDebug
			break
		}
	}
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}
