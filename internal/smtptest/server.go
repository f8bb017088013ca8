// Package smtptest runs real SMTP servers for tests: go-smtp's server side
// in-process (AUTH PLAIN and LOGIN with any prompts, STARTTLS or implicit
// TLS with a throw-away certificate, scripted 4xx/5xx replies, outages),
// and Python's aiosmtpd as an independent, strict peer (it refuses a nested
// MAIL that go-smtp's server lets through, RFC 5321 §4.1.4).
//
// Both speak the real protocol over loopback TCP; nothing is mocked.
package smtptest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// TLSMode is how the server protects connections.
type TLSMode int

const (
	NoTLS       TLSMode = iota // plaintext only, no STARTTLS offered
	StartTLS                   // plaintext greeting, STARTTLS offered (port 587)
	ImplicitTLS                // TLS from the first byte (port 465)
)

// Options configure a Server.
type Options struct {
	TLS TLSMode
	// Users (user → password): when set, AUTH is offered and required
	// before MAIL (530 otherwise).
	Users map[string]string
	// Mechanisms offered; default PLAIN and LOGIN. AUTH with any other
	// mechanism gets 504.
	Mechanisms []string
	// LoginPrompts are the two LOGIN challenges; default "Username:",
	// "Password:".
	LoginPrompts [2]string
	// AllowInsecureAuth offers AUTH without TLS (go-smtp offers it only
	// over TLS otherwise).
	AllowInsecureAuth bool
	// Token, when set, checks the access token of an XOAUTH2 or
	// OAUTHBEARER login (offer them in Mechanisms); AUTH is then required
	// before MAIL. The exchange is checked byte for byte.
	Token func(user, token string) bool
	// MicrosoftStyle refuses a token with 535 5.7.3 at once, as Microsoft
	// 365 does; otherwise (Google's way) the server first sends a base64
	// JSON error challenge, waits for the client's empty (XOAUTH2) or ^A
	// (OAUTHBEARER) answer, then says 535 5.7.8.
	MicrosoftStyle bool
	// DSN offers delivery status notifications (RFC 3461); Commands then
	// show MAIL's RET and ENVID and RCPT's NOTIFY.
	DSN bool
}

// Steps that Fail can script.
var steps = []string{"MAIL", "RCPT", "DATA", "AUTH"}

type reply struct {
	times int // <0: always
	err   *smtp.SMTPError
}

// Server is a running in-process SMTP server. Its methods are safe to call
// while clients talk to it.
type Server struct {
	Addr     string
	Host     string
	Port     int
	CAFile   string         // PEM of the server's self-signed certificate (smtp.tls.ca_file)
	CertPool *x509.CertPool // the same, for tls.Config.RootCAs

	opts Options
	srv  *smtp.Server
	down atomic.Bool

	connsMu sync.Mutex
	open    map[net.Conn]bool // accepted and not yet closed, for Drop
	maxOpen int               // the most connections open at once

	mu      sync.Mutex
	msgs    []Message
	arrived chan struct{} // closed and replaced at each accepted mail
	cmds    []string
	fails   map[string][]*reply
	rcpt    map[string]*reply
	conns   int
	closed  bool

	hold      *hold         // current HoldData period, nil when none
	dataDelay time.Duration // SetDataDelay
	closing   chan struct{} // closed by Close: ends holds and delays
}

// Start listens on 127.0.0.1:0; the server stops when the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if len(o.Mechanisms) == 0 {
		o.Mechanisms = []string{sasl.Plain, sasl.Login}
	}
	if o.LoginPrompts == [2]string{} {
		o.LoginPrompts = [2]string{"Username:", "Password:"}
	}
	s := &Server{opts: o, fails: map[string][]*reply{}, rcpt: map[string]*reply{},
		arrived: make(chan struct{}), closing: make(chan struct{})}
	cert, pool, caFile := selfSigned(t)
	s.CertPool, s.CAFile = pool, caFile
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}

	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = "smtptest.localhost"
	srv.ErrorLog = log.New(io.Discard, "", 0) // clients that hang up are what tests do
	srv.AllowInsecureAuth = o.AllowInsecureAuth
	srv.EnableDSN = o.DSN
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.MaxMessageBytes = 10 << 20
	srv.MaxRecipients = 50
	if o.TLS == StartTLS {
		srv.TLSConfig = tlsCfg
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtptest: listen: %v", err)
	}
	var ln net.Listener = &downListener{Listener: l, s: s}
	if o.TLS == ImplicitTLS {
		ln = tls.NewListener(ln, tlsCfg)
	}
	s.srv = srv
	s.Addr = l.Addr().String()
	s.Host = "127.0.0.1"
	s.Port = l.Addr().(*net.TCPAddr).Port
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and drops every connection. It may be called more
// than once.
func (s *Server) Close() {
	s.mu.Lock()
	closed := s.closed
	s.closed = true
	s.mu.Unlock()
	if !closed {
		close(s.closing) // held or delayed DATAs answer, so their goroutines end
		_ = s.srv.Close()
	}
}

// SetDown starts (true) or ends an outage: while down, every new
// connection is closed as soon as it is accepted, before the greeting, so
// clients see a dropped connection. Sessions already open keep working.
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// Drop closes every open connection, as a server that restarts or
// crashes does; with SetDown(true) it is a whole outage, for clients
// that keep an idle session open.
func (s *Server) Drop() {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	for c := range s.open {
		_ = c.Close()
	}
	clear(s.open)
}

// Fail makes the next times occurrences of step ("MAIL", "RCPT", "DATA" or
// "AUTH") answer code, enhanced and text instead of succeeding; times < 0
// means always. Scripts for one step queue up in call order. A DATA reply
// comes after the whole message was read (the reply to the final dot); an
// AUTH reply after the client sent its credentials.
func (s *Server) Fail(step string, times, code int, enhanced [3]int, text string) {
	step = strings.ToUpper(step)
	if !slices.Contains(steps, step) {
		panic(fmt.Sprintf("smtptest: Fail(%q): step must be one of %v", step, steps))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails[step] = append(s.fails[step], &reply{times, smtpError(code, enhanced, text)})
}

// FailRcpt makes RCPT TO:<rcpt> (compared case-insensitively) answer code
// times times (<0: always). It takes precedence over Fail("RCPT", ...).
func (s *Server) FailRcpt(rcpt string, times, code int, enhanced [3]int, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcpt[strings.ToLower(rcpt)] = &reply{times, smtpError(code, enhanced, text)}
}

func smtpError(code int, enhanced [3]int, text string) *smtp.SMTPError {
	ec := smtp.EnhancedCode(enhanced)
	if enhanced == [3]int{} {
		ec = smtp.NoEnhancedCode
	}
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: text}
}

// scripted returns the scripted reply for step, if one is left, using it up.
func (s *Server) scripted(step string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scriptedLocked(step)
}

func (s *Server) scriptedRcpt(to string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.rcpt[strings.ToLower(to)]; r != nil && r.use() {
		return r.err
	}
	return s.scriptedLocked("RCPT")
}

func (s *Server) scriptedLocked(step string) error {
	for _, r := range s.fails[step] {
		if r.use() {
			return r.err
		}
	}
	return nil
}

func (r *reply) use() bool {
	if r.times == 0 {
		return false
	}
	if r.times > 0 {
		r.times--
	}
	return true
}

func (s *Server) record(cmd string) {
	s.mu.Lock()
	s.cmds = append(s.cmds, cmd)
	s.mu.Unlock()
}

// Commands is what clients did, in order, as far as go-smtp's Session
// interface shows it:
//
//	"EHLO name"          a session began (EHLO or HELO; after STARTTLS too)
//	"STARTTLS"           the plaintext session was upgraded to TLS
//	"AUTH PLAIN user"    credentials were checked (recorded right or wrong)
//	"MAIL <from>"        also when refused
//	"RCPT <to>"          also when refused
//	"DATA"               the whole message was received
//	"RSET"               a reset the client asked for: RSET, or a repeated
//	                     EHLO (go-smtp cannot tell them apart; go-smtp's
//	                     client re-sends EHLO after RSET, so its RSET shows
//	                     as two). The reset go-smtp does by itself after
//	                     each DATA is not recorded.
//	"LOGOUT"             the connection ended (QUIT, drop, server close)
//
// NOOP, VRFY and QUIT as such are invisible to a backend.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cmds)
}

// Conns is how many connections reached EHLO (go-smtp creates its session
// there, not at accept). The second session go-smtp creates after STARTTLS
// on the same connection is not counted.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Open is how many connections are open now: accepted (from the first
// byte, before any greeting) and not yet closed by either side.
func (s *Server) Open() int {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	return len(s.open)
}

// MaxOpen is the most connections that were open at the same time.
func (s *Server) MaxOpen() int {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	return s.maxOpen
}

// Messages returns the mails accepted so far (DATA answered 250), in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

func (s *Server) accept(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.arrived)
	s.arrived = make(chan struct{})
}

// WaitMessages waits until at least n mails were accepted and returns them
// all; it fails the test, listing the commands seen, if they do not arrive
// within timeout.
func (s *Server) WaitMessages(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		msgs, arrived := slices.Clone(s.msgs), s.arrived
		s.mu.Unlock()
		if len(msgs) >= n {
			return msgs
		}
		select {
		case <-arrived:
		case <-timer.C:
			t.Fatalf("smtptest: %d of %d mails arrived within %s; commands seen: %q", len(msgs), n, timeout, s.Commands())
		}
	}
}

// String describes the server for failure messages.
func (s *Server) String() string { return "smtptest " + s.Addr }

type downListener struct {
	net.Listener
	s *Server
}

func (d *downListener) Accept() (net.Conn, error) {
	for {
		c, err := d.Listener.Accept()
		if err != nil {
			return c, err
		}
		if !d.s.down.Load() {
			s := d.s
			s.connsMu.Lock()
			if s.open == nil {
				s.open = map[net.Conn]bool{}
			}
			s.open[c] = true
			s.maxOpen = max(s.maxOpen, len(s.open))
			s.connsMu.Unlock()
			return &trackedConn{Conn: c, s: s}, nil
		}
		_ = c.Close()
	}
}

// trackedConn leaves the server's open set when closed.
type trackedConn struct {
	net.Conn
	s *Server
}

func (c *trackedConn) Close() error {
	c.s.connsMu.Lock()
	delete(c.s.open, c.Conn)
	c.s.connsMu.Unlock()
	return c.Conn.Close()
}
