// Package smtptest runs real SMTP servers for tests: go-smtp's server side
// in-process (AUTH PLAIN and LOGIN with any prompts, STARTTLS or implicit
// TLS with a throw-away certificate, scripted 4xx/5xx replies, outages),
// and Python's aiosmtpd as an independent, strict peer (it refuses a nested
// MAIL that go-smtp's server lets through).
package smtptest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// TLSMode is how the server protects connections.
type TLSMode int

const (
	NoTLS       TLSMode = iota
	StartTLS            // plaintext greeting, STARTTLS offered
	ImplicitTLS         // TLS from the first byte
)

// Options configure a Server.
type Options struct {
	TLS TLSMode
	// Users (user → password): when set, AUTH is required before MAIL
	// (530 otherwise).
	Users map[string]string
	// Mechanisms offered; default PLAIN and LOGIN.
	Mechanisms []string
	// LoginPrompts are the two LOGIN challenges; default "Username:",
	// "Password:".
	LoginPrompts [2]string
	// AllowInsecureAuth offers AUTH without TLS.
	AllowInsecureAuth bool
}

// Message is one accepted mail, parsed as a mail client would.
type Message struct {
	From     string
	To       []string
	Data     []byte
	Header   mail.Header
	Subject  string
	Body     string
	AuthUser string
}

type reply struct {
	times int // <0: always
	err   *smtp.SMTPError
}

// Server is a running in-process SMTP server.
type Server struct {
	Addr     string
	Host     string
	Port     int
	CAFile   string         // PEM of the server's self-signed certificate
	CertPool *x509.CertPool // the same, for tls.Config.RootCAs

	opts Options
	srv  *smtp.Server
	down atomic.Bool

	mu    sync.Mutex
	msgs  []Message
	cmds  []string
	fails map[string][]*reply
	rcpt  map[string]*reply
	conns int
}

// Start listens on a free loopback port; the server stops when the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if len(o.Mechanisms) == 0 {
		o.Mechanisms = []string{sasl.Plain, sasl.Login}
	}
	if o.LoginPrompts == [2]string{} {
		o.LoginPrompts = [2]string{"Username:", "Password:"}
	}
	s := &Server{opts: o, fails: map[string][]*reply{}, rcpt: map[string]*reply{}}
	cert, pool, caFile := selfSigned(t)
	s.CertPool, s.CAFile = pool, caFile
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}

	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		return &session{s: s}, nil
	}))
	srv.Domain = "smtptest.localhost"
	srv.ErrorLog = log.New(io.Discard, "", 0) // clients that hang up are what tests do
	srv.AllowInsecureAuth = o.AllowInsecureAuth
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.MaxMessageBytes = 10 << 20
	srv.MaxRecipients = 50
	if o.TLS == StartTLS {
		srv.TLSConfig = tlsCfg
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
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

// Close stops the server.
func (s *Server) Close() { _ = s.srv.Close() }

// SetDown makes the server close every new connection at once (an outage)
// or serve again.
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// Fail makes the next times occurrences of step (MAIL, RCPT, DATA, AUTH)
// answer code instead of succeeding; times < 0 means always.
func (s *Server) Fail(step string, times, code int, enhanced [3]int, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	step = strings.ToUpper(step)
	s.fails[step] = append(s.fails[step], &reply{times, &smtp.SMTPError{Code: code, EnhancedCode: enhanced, Message: text}})
}

// FailRcpt makes RCPT TO:<rcpt> answer code, times times (<0: always).
func (s *Server) FailRcpt(rcpt string, times, code int, enhanced [3]int, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcpt[strings.ToLower(rcpt)] = &reply{times, &smtp.SMTPError{Code: code, EnhancedCode: enhanced, Message: text}}
}

func (s *Server) scripted(step string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.fails[step] {
		if r.times != 0 {
			if r.times > 0 {
				r.times--
			}
			return r.err
		}
	}
	return nil
}

func (s *Server) scriptedRcpt(to string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.rcpt[strings.ToLower(to)]; r != nil && r.times != 0 {
		if r.times > 0 {
			r.times--
		}
		return r.err
	}
	return nil
}

func (s *Server) record(cmd string) {
	s.mu.Lock()
	s.cmds = append(s.cmds, cmd)
	s.mu.Unlock()
}

// Commands is what clients did, in order: "AUTH PLAIN user", "MAIL <a>",
// "RCPT <b>", "DATA", "RSET". go-smtp also resets a session by itself
// after each DATA; those resets are recorded as "RSET" too.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

// Conns is how many SMTP sessions were opened.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Messages returns the mails accepted so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// WaitMessages waits until n mails were accepted.
func (s *Server) WaitMessages(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	return waitMessages(t, n, timeout, s.Messages)
}

func waitMessages(t testing.TB, n int, timeout time.Duration, list func() []Message) []Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := list()
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtptest: %d of %d mails arrived within %s", len(msgs), n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type session struct {
	s        *Server
	user     string
	from     string
	to       []string
	authDone bool
}

func (se *session) AuthMechanisms() []string {
	if len(se.s.opts.Users) == 0 {
		return nil
	}
	return se.s.opts.Mechanisms
}

func (se *session) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		se.s.record("AUTH " + mech + " " + user)
		if err := se.s.scripted("AUTH"); err != nil {
			return err
		}
		if want, ok := se.s.opts.Users[user]; !ok || want != pass {
			return smtp.ErrAuthFailed
		}
		se.user = user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return errors.New("identity differs from user")
			}
			return check(user, pass)
		}), nil
	case sasl.Login:
		return &loginServer{prompts: se.s.opts.LoginPrompts, check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (se *session) Mail(from string, _ *smtp.MailOptions) error {
	se.s.record("MAIL <" + from + ">")
	if len(se.s.opts.Users) > 0 && se.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	if err := se.s.scripted("MAIL"); err != nil {
		return err
	}
	se.from, se.to = from, nil
	return nil
}

func (se *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	se.s.record("RCPT <" + to + ">")
	if err := se.s.scriptedRcpt(to); err != nil {
		return err
	}
	if err := se.s.scripted("RCPT"); err != nil {
		return err
	}
	se.to = append(se.to, to)
	return nil
}

func (se *session) Data(r io.Reader) error {
	se.s.record("DATA")
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := se.s.scripted("DATA"); err != nil {
		return err
	}
	m := parse(data)
	m.From, m.To, m.AuthUser = se.from, se.to, se.user
	se.s.mu.Lock()
	se.s.msgs = append(se.s.msgs, m)
	se.s.mu.Unlock()
	return nil
}

func (se *session) Reset() {
	se.s.record("RSET")
	se.from, se.to = "", nil
}

func (se *session) Logout() error { return nil }

// parse reads a mail as a client would; a mail it cannot parse keeps only
// its raw bytes, for the test to report.
func parse(data []byte) Message {
	m := Message{Data: data}
	r, err := mail.CreateReader(bytes.NewReader(data))
	if err != nil {
		return m
	}
	m.Header = r.Header
	m.Subject, _ = r.Header.Subject()
	if p, err := r.NextPart(); err == nil {
		b, _ := io.ReadAll(p.Body)
		m.Body = string(b)
	}
	return m
}

// loginServer is AUTH LOGIN with configurable prompts (go-sasl has no
// LOGIN server). It accepts a user name sent as an initial response too.
type loginServer struct {
	prompts [2]string
	check   func(user, pass string) error
	user    string
	step    int
}

func (l *loginServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		l.step = 1
		if resp == nil {
			return []byte(l.prompts[0]), false, nil
		}
		fallthrough
	case 1:
		l.user = string(resp)
		l.step = 2
		return []byte(l.prompts[1]), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

type downListener struct {
	net.Listener
	s *Server
}

func (d *downListener) Accept() (net.Conn, error) {
	for {
		c, err := d.Listener.Accept()
		if err != nil || !d.s.down.Load() {
			return c, err
		}
		_ = c.Close()
	}
}

// selfSigned makes a certificate for 127.0.0.1 and localhost.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "smtptest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	caFile := filepath.Join(t.TempDir(), "smtptest-ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, caFile
}

// String describes the server for failure messages.
func (s *Server) String() string { return fmt.Sprintf("smtptest %s", s.Addr) }
