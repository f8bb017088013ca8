package smtpin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/emersion/go-smtp"
)

// Log keys, the same in every line this package writes.
const (
	keyClient = "client"
	keyResult = "result"
	keyReason = "reason"
	keyReply  = "reply"
	keyUser   = "user"
	keyRcpt   = "rcpt"
	keyID     = "id"
	keySender = "sender"
	keyRelay  = "relay"
	keyHeld   = "held"
	keyErr    = "err"
)

// Server is a bound SMTP ingress listener.
type Server struct {
	opts Options
	pol  *policy
	sink Sink
	ln   *listener
	smtp *smtp.Server

	ctx    context.Context // Sink.Accept's: ends at Close
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	busy   sync.WaitGroup // Data calls and lingering refusals: Close waits for them
	once   sync.Once
}

// Listen checks opts and binds the listening socket, so that a port in
// use or a bad option fails at start-up; serving begins with Run.
func Listen(opts Options, sink Sink) (*Server, error) {
	if sink == nil {
		return nil, errors.New("smtp ingress: a Sink is required")
	}
	opts = opts.withDefaults()
	pol, err := opts.compile()
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen for SMTP: %w", err)
	}
	s := &Server{opts: opts, pol: pol, sink: sink}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.ln = newListener(l, s)
	s.smtp = s.newSMTP()
	return s, nil
}

func (s *Server) newSMTP() *smtp.Server {
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = s.opts.Hostname
	srv.MaxMessageBytes = s.opts.MaxMessageBytes
	srv.MaxLineLength = s.opts.MaxLineLength
	// The session counts recipients itself, so that the refusal is
	// logged and counted like the others.
	srv.MaxRecipients = 0
	// go-smtp offers AUTH only over TLS unless told otherwise. Devices on
	// the LAN cannot do TLS, and only clients inside networks get this far.
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = s.opts.IdleTimeout
	srv.WriteTimeout = s.opts.WriteTimeout
	srv.TLSConfig = s.opts.TLS
	// go-smtp reports connections that broke; alertd logs its refusals itself.
	srv.ErrorLog = slog.NewLogLogger(s.opts.Log.Handler(), slog.LevelDebug)
	return srv
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx ends or Close is called. When ctx ends, sessions
// get Options.ShutdownGrace to finish (a mail in DATA gets its commit and
// its 250), then the rest are closed. Run returns after the last
// Sink.Accept has returned; call it once.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.smtp.Serve(s.ln) }()
	select {
	case err := <-errc:
		closedByUs := s.isClosed()
		s.Close()
		if err != nil && !closedByUs {
			return fmt.Errorf("serve SMTP: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	// Not go-smtp's Shutdown: it and Close both close one channel
	// unguarded, and panic when they race.
	_ = s.ln.Close()
	grace, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownGrace)
	defer cancel()
	s.ln.wait(grace)
	s.Close()
	<-errc // the closed listener's error: expected
	return nil
}

// Close stops the listener at once: it closes every connection, cancels
// the Sink.Accept calls in flight (their devices hear 451) and waits for
// them to return. It may be called more than once.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()
		_ = s.smtp.Close()
		_ = s.ln.Close()
		s.ln.closeAll() // go-smtp's Close misses connections Serve has not registered yet
		s.busy.Wait()
	})
	return nil
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// enter registers work Close must wait for; false once closing.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.busy.Add(1)
	return true
}

func (s *Server) leave() { s.busy.Done() }

// logRefusal is the one place a refusal is logged and counted.
func (s *Server) logRefusal(log *slog.Logger, r Result, reason, reply string, attrs ...any) {
	level := slog.LevelInfo
	if r == RelayDenied || r == AuthFailed {
		level = slog.LevelWarn
	}
	args := append([]any{keyResult, string(r), keyReason, reason, keyReply, reply}, attrs...)
	log.Log(context.Background(), level, "smtp ingress refused", args...)
	s.opts.Count(r)
}
