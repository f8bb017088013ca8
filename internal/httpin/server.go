// Package httpin is alertd's HTTP device ingress: the listener that lets
// devices which cannot speak MQTT (Arduinos with an HTTP client, ESP32s,
// shell scripts) hand alertd a reading or a mail with one request.
//
//	POST /v1/events/<topic>   a reading: JSON, form or text body
//	GET  /v1/events/<topic>   a reading as query parameters
//	POST /v1/mail             a mail to recipients allowed by relay_to
//	POST /v1/alertmanager     an Alertmanager or Grafana webhook
//
// It owns parsing, authentication (a shared bearer token, also accepted as
// a Basic password or a token query parameter), the relay_to check and the
// mapping of every outcome to a status code. It commits nothing itself:
// each request is handed to a Sink, and the 202 is written only after the
// Sink returned, so a device that got a 202 may forget the reading.
//
// Invariants: a request without a valid token reaches no parser and no
// Sink; a body is read whole (and bounded) before the Sink sees it; a
// token is never logged, not even as part of a URL. The listener is a
// separate one from the admin API (internal/httpapi), so devices on a
// network never reach the outbox or silences routes.
//
// Topics follow MQTT 3.1.1 section 4.7 for topic names, plus the bounds
// alertd applies to every topic. Request handling follows RFC 9110
// (status codes, Allow, Retry-After, WWW-Authenticate) and RFC 6750 for
// bearer tokens.
package httpin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/alertd/alertd/internal/payload"
)

// Options configure the listener. Listen and Tokens are required.
type Options struct {
	Listen string   // ingress.http.listen, e.g. "127.0.0.1:9465"
	Tokens []string // ingress.http.tokens: secrets, never logged
	// RelayTo is ingress.relay_to: the addresses ("ops@example.org") and
	// whole domains ("@example.org") mail from devices may go to. Empty:
	// every mail is refused.
	RelayTo      []string
	MaxBodyBytes int64 // ingress.http.max_body_bytes; 0: DefaultMaxBodyBytes

	Log   *slog.Logger        // nil: discard
	Count func(result string) // called once per answered request; nil: not counted
	Now   func() time.Time    // stamps Event.Received; nil: time.Now

	// Zero takes the default named after each.
	ReadTimeout   time.Duration // DefaultReadTimeout
	CommitTimeout time.Duration // DefaultCommitTimeout
	IdleTimeout   time.Duration // DefaultIdleTimeout
}

// Defaults, each with its reason.
const (
	// DefaultMaxBodyBytes is the largest payload a rule reads (64 KiB):
	// a bigger body could never alert.
	DefaultMaxBodyBytes = payload.MaxBytes
	// DefaultReadTimeout bounds reading one request, headers and body: a
	// 64 KiB body arrives within it even over a 2G modem (~3 kB/s), and
	// a client that trickles bytes (slow-loris) loses its connection.
	DefaultReadTimeout = 30 * time.Second
	// DefaultCommitTimeout bounds the Sink's commit. A device's HTTP
	// client gives up after some tens of seconds; past that an answer is
	// lost anyway.
	DefaultCommitTimeout = 15 * time.Second
	// DefaultIdleTimeout keeps a connection open between requests long
	// enough for a device reporting every minute, no longer.
	DefaultIdleTimeout = 60 * time.Second
	// maxHeaderBytes bounds request headers: a device sends a few hundred
	// bytes; 16 KiB leaves room for long tokens and proxies' additions.
	maxHeaderBytes = 16 << 10
	// maxHeaderWait bounds the headers alone, under DefaultReadTimeout,
	// so a connection that sends nothing is dropped early.
	maxHeaderWait = 10 * time.Second
)

// Server is the listener. Listen binds it, Run serves it.
type Server struct {
	srv           *http.Server
	ln            net.Listener
	auth          *tokens
	relay         *relayTo
	maxBody       int64
	commitTimeout time.Duration
	log           *slog.Logger
	count         func(string)
	now           func() time.Time
	sink          Sink
	fails         failLog
	close         sync.Once
}

// Listen checks opts and binds the address, so a port in use is an error
// at start, not later.
func Listen(opts Options, sink Sink) (*Server, error) {
	s, err := newServer(opts, sink)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("ingress.http: listen on %s: %w", opts.Listen, err)
	}
	s.ln = ln
	return s, nil
}

func newServer(o Options, sink Sink) (*Server, error) {
	if sink == nil {
		return nil, errors.New("ingress.http: no sink")
	}
	auth, err := newTokens(o.Tokens)
	if err != nil {
		return nil, fmt.Errorf("ingress.http.tokens: %w", err)
	}
	relay, err := newRelayTo(o.RelayTo)
	if err != nil {
		return nil, fmt.Errorf("ingress.relay_to: %w", err)
	}
	if o.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("ingress.http.max_body_bytes: %d is negative", o.MaxBodyBytes)
	}
	s := &Server{
		auth: auth, relay: relay, sink: sink, log: o.Log, count: o.Count, now: o.Now,
		maxBody:       or(o.MaxBodyBytes, DefaultMaxBodyBytes),
		commitTimeout: or(o.CommitTimeout, DefaultCommitTimeout),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.fails.log = s.log
	if s.count == nil {
		s.count = func(string) {}
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.srv = s.httpServer(or(o.ReadTimeout, DefaultReadTimeout), or(o.IdleTimeout, DefaultIdleTimeout))
	return s, nil
}

func (s *Server) httpServer(read, idle time.Duration) *http.Server {
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: min(read, maxHeaderWait),
		ReadTimeout:       read,
		// Counted from the end of the headers: the body, the commit, the
		// answer. Shorter would lose the answer to a committed request.
		WriteTimeout:   read + s.commitTimeout + 5*time.Second,
		IdleTimeout:    idle,
		MaxHeaderBytes: maxHeaderBytes,
		// net/http's own messages (accept errors, panics) name no URL
		// and no header.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx is done, then lets requests in flight finish their
// commit (up to the commit timeout) before it returns.
func (s *Server) Run(ctx context.Context) error {
	shutDown := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(shutDown)
		shutdown, cancel := context.WithTimeout(context.Background(), s.commitTimeout)
		defer cancel()
		if s.srv.Shutdown(shutdown) != nil {
			_ = s.Close()
		}
	})
	err := s.srv.Serve(s.ln)
	if !stop() {
		// Serve returns as Shutdown begins; the answers to commits in
		// flight are still being written.
		<-shutDown
	}
	if !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("ingress.http: %w", err)
	}
	return nil
}

// Close stops the listener and drops open connections at once. It may be
// called any number of times, before or after Run.
func (s *Server) Close() error {
	var err error
	s.close.Do(func() {
		err = s.srv.Close()
		if cerr := s.ln.Close(); err == nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
	})
	return err
}

var _ http.Handler = (*Server)(nil)
