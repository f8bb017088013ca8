// Package httpapi serves alertd's HTTP endpoint: GET /metrics (Prometheus
// text format), GET /healthz ("ok" once every source is ready — MQTT
// subscribed, the device listeners serving — else 503 naming each one that
// is not), and the outbox API that `alertd outbox` uses while the service
// runs:
//
//	GET    /api/v1/status                  what the status page shows (JSON)
//	GET    /api/v1/outbox                  pending, dead and unreadable entries (JSON)
//	POST   /api/v1/outbox/{id}/retry       a dead entry back to the queue (409 if unreadable)
//	POST   /api/v1/outbox/retry-dead       every dead entry back to the queue
//	DELETE /api/v1/outbox/{id}             drop an entry, unreadable ones too
//	GET    /api/v1/silences                active silences (JSON)
//	POST   /api/v1/silences                add one (JSON body: rule, series, comment, expires)
//	DELETE /api/v1/silences/{id}           remove one
//	POST   /api/v1/reload                  re-read the configuration file
//
// It binds to loopback by default. Whatever http.listen says, the /api
// routes answer only requests from the same machine, addressed to it by
// an IP or "localhost" (a web page cannot reach them through DNS
// rebinding); requests that change something must also carry the header
// X-Alertd-Admin and no Origin (a web page cannot send them without a CORS
// preflight, which is never granted). Only /metrics, /healthz and the
// status page are for the network: GET / (status.go), read-only HTML of
// what GET /api/v1/status answers.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/silence"
)

// Server is the HTTP endpoint.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Queue is the part of the outbox the API serves.
type Queue interface {
	List() (pending, dead []*outbox.Entry, err error)
	Unreadable() ([]outbox.Unreadable, error)
	Retry(id uint64, now time.Time) error
	RetryAllDead(now time.Time) (int, error)
	Drop(id uint64) error
}

// Listing is the JSON of GET /api/v1/outbox.
type Listing struct {
	Pending []*outbox.Entry `json:"pending"`
	Dead    []*outbox.Entry `json:"dead"`
	// Unreadable are entries that could not be decoded, kept in
	// quarantine (absent from the answers of an older alertd).
	Unreadable []outbox.Unreadable `json:"unreadable"`
}

// Silences is what the API needs of the silences.
type Silences interface {
	List(now time.Time) []silence.Silence
	Add(si silence.Silence) (silence.Silence, error) // validates
	Remove(id uint64) error
}

// Reloader re-reads the configuration file of the running service.
type Reloader interface {
	// Reload applies the file, or leaves the running configuration in
	// force and returns why not (config.Errors for a file with mistakes).
	Reload() (ReloadReport, error)
}

// ReloadReport is the JSON of POST /api/v1/reload: what a reload changed,
// or, with a 422, every problem that stopped it (FILE:LINE:COL: message).
type ReloadReport struct {
	Rules   int      `json:"rules"`
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"`
	Changed []string `json:"changed,omitempty"`
	Errors  []string `json:"errors,omitempty"`
}

// SourceHealth is one source's readiness ("mqtt", "smtp", "http").
type SourceHealth struct {
	Name  string
	Ready bool
	Why   string // what /healthz says while it is not ready
}

// Check is one more finding /healthz?verbose=1 shows, such as the SMTP
// preflight; it never changes the status.
type Check struct {
	Name   string
	Status string
}

// Options configure the endpoint.
type Options struct {
	Registry *prometheus.Registry
	Health   func() []SourceHealth // each source's readiness
	Checks   func() []Check        // nil: none
	Queue    Queue                 // nil: no outbox API
	Silences Silences              // nil: no silences API
	Reloader Reloader              // nil: no reload API
	Status   func() Status         // nil: no status page (GET /, /api/v1/status)
	Log      *slog.Logger
}

// Listen binds addr and prepares the routes.
func Listen(addr string, o Options) (*Server, error) {
	reg, q, log := o.Registry, o.Queue, o.Log
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http: listen on %s: %w (set http.listen to a free address, or \"off\")", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		health := o.Health()
		var down []string
		for _, s := range health {
			if !s.Ready {
				down = append(down, s.Name+": "+s.Why)
			}
		}
		if r.URL.Query().Get("verbose") != "" {
			verbose(w, health, o.Checks, len(down) == 0)
			return
		}
		if len(down) > 0 {
			http.Error(w, strings.Join(down, "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	routeProfiles(mux)
	if q != nil {
		routeQueue(mux, q)
	}
	if o.Silences != nil {
		routeSilences(mux, o.Silences)
	}
	if o.Status != nil {
		routeStatus(mux, o.Status)
	}
	if o.Reloader != nil {
		mux.HandleFunc("POST /api/v1/reload", local(func(w http.ResponseWriter, _ *http.Request) {
			rep, err := o.Reloader.Reload()
			if err != nil {
				if len(rep.Errors) == 0 {
					rep.Errors = []string{err.Error()}
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnprocessableEntity)
				_ = json.NewEncoder(w).Encode(rep)
				return
			}
			writeJSON(w, rep)
		}))
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return &Server{srv: srv, ln: ln}, nil
}

// verbose answers /healthz?verbose=1: the same status as /healthz, and a
// line for every source, ready or not, and every check.
func verbose(w http.ResponseWriter, health []SourceHealth, checks func() []Check, ready bool) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	status, code := "ok", http.StatusOK
	if !ready {
		status, code = "not ready", http.StatusServiceUnavailable
	}
	w.WriteHeader(code)
	fmt.Fprintln(w, "status:", status)
	for _, s := range health {
		why := "ready"
		if !s.Ready {
			why = "not ready: " + s.Why
		}
		fmt.Fprintf(w, "%s: %s\n", s.Name, why)
	}
	if checks != nil {
		for _, c := range checks() {
			fmt.Fprintf(w, "%s: %s\n", c.Name, c.Status)
		}
	}
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(shutdown)
	})
	defer stop()
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

// routeProfiles serves Go's profiles (go tool pprof
// http://127.0.0.1:9464/debug/pprof/profile?seconds=30) to this machine
// only, like /api: stack traces are not for the LAN. They cost nothing
// until asked for. The command line is not served: it is nobody's
// business off the machine and the profiles do not need it.
func routeProfiles(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", reader(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/profile", reader(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/symbol", reader(pprof.Symbol))
	mux.HandleFunc("GET /debug/pprof/trace", reader(pprof.Trace))
}

func routeQueue(mux *http.ServeMux, q Queue) {
	mux.HandleFunc("GET /api/v1/outbox", reader(func(w http.ResponseWriter, _ *http.Request) {
		pending, dead, err := q.List() // first: it quarantines what it cannot read
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		unreadable, err := q.Unreadable()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if unreadable == nil {
			unreadable = []outbox.Unreadable{}
		}
		writeJSON(w, Listing{Pending: nonNil(pending), Dead: nonNil(dead), Unreadable: unreadable})
	}))
	mux.HandleFunc("POST /api/v1/outbox/retry-dead", local(func(w http.ResponseWriter, _ *http.Request) {
		n, err := q.RetryAllDead(time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]int{"retried": n})
	}))
	mux.HandleFunc("POST /api/v1/outbox/{id}/retry", local(withID(func(id uint64) error { return q.Retry(id, time.Now()) })))
	mux.HandleFunc("DELETE /api/v1/outbox/{id}", local(withID(q.Drop)))
}

func withID(do func(uint64) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
		if err != nil {
			http.Error(w, "id must be a number", http.StatusBadRequest)
			return
		}
		switch err := do(id); {
		case errors.Is(err, outbox.ErrNotFound), errors.Is(err, silence.ErrNotFound):
			http.Error(w, err.Error(), http.StatusNotFound)
		case errors.Is(err, outbox.ErrUnreadable):
			http.Error(w, err.Error(), http.StatusConflict)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			writeJSON(w, map[string]uint64{"id": id})
		}
	}
}

// AdminHeader must be present on requests that change something.
const AdminHeader = "X-Alertd-Admin"

// reader guards the /api routes that only read.
func reader(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if msg := sameMachine(r); msg != "" {
			http.Error(w, msg, http.StatusForbidden)
			return
		}
		h(w, r)
	}
}

// local guards the /api routes that change something.
func local(h http.HandlerFunc) http.HandlerFunc {
	return reader(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get(AdminHeader) == "":
			http.Error(w, "changing alertd needs the "+AdminHeader+" header (use the alertd command)", http.StatusForbidden)
		case r.Header.Get("Origin") != "":
			http.Error(w, "requests from web pages are refused", http.StatusForbidden)
		default:
			h(w, r)
		}
	})
}

// sameMachine says why r is refused, or "" when it comes from this
// machine (loopback, or the very address it was sent to) and names the
// host by an IP or localhost.
func sameMachine(r *http.Request) string {
	remote, _, err := net.SplitHostPort(r.RemoteAddr)
	rip := net.ParseIP(remote)
	if err != nil || rip == nil {
		return "unknown client address"
	}
	own := false
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if lh, _, err := net.SplitHostPort(la.String()); err == nil {
			own = net.ParseIP(lh).Equal(rip)
		}
	}
	if !rip.IsLoopback() && !own {
		return "the API answers requests from this machine only"
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	if host != "localhost" && net.ParseIP(strings.Trim(host, "[]")) == nil {
		return "the API must be addressed by IP or localhost"
	}
	return ""
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func nonNil(es []*outbox.Entry) []*outbox.Entry {
	if es == nil {
		return []*outbox.Entry{}
	}
	return es
}

func routeSilences(mux *http.ServeMux, ss Silences) {
	mux.HandleFunc("GET /api/v1/silences", reader(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, ss.List(time.Now()))
	}))
	mux.HandleFunc("POST /api/v1/silences", local(func(w http.ResponseWriter, r *http.Request) {
		var si silence.Silence
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&si); err != nil {
			http.Error(w, "bad silence: "+err.Error(), http.StatusBadRequest)
			return
		}
		added, err := ss.Add(si)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, added)
	}))
	mux.HandleFunc("DELETE /api/v1/silences/{id}", local(withID(ss.Remove)))
}
