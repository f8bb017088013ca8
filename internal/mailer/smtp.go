package mailer

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Security is how the connection to the SMTP server is protected.
type Security string

const (
	SecurityStartTLS Security = "starttls" // plaintext greeting, then STARTTLS (port 587)
	SecurityTLS      Security = "tls"      // TLS from the first byte (port 465)
	SecurityNone     Security = "none"     // no TLS: trusted networks only
)

// SMTPOptions configure an SMTPTransport.
type SMTPOptions struct {
	Host     string
	Port     int
	Security Security
	// Auth is auto (PLAIN if offered, else LOGIN; with Tokens, XOAUTH2 if
	// offered, else OAUTHBEARER), plain, login, xoauth2, oauthbearer or none.
	Auth              string
	Username          string
	Password          string
	AllowInsecureAuth bool // allow credentials over a connection without TLS
	Helo              string
	Timeout           time.Duration // per command, and for connecting
	TLSConfig         *tls.Config   // nil: system roots, ServerName = Host
	// Tokens supplies access tokens for xoauth2 and oauthbearer (and for
	// auto, which then logs in with a token instead of Password).
	Tokens TokenSource
	// Transcript, when set, receives each session as it happens: "C: " and
	// "S: " lines with every AUTH payload redacted, and the TLS in use
	// (alertd send-test). nil costs nothing.
	Transcript io.Writer
}

// idleCheck is how long a connection may sit unused before it is probed
// with NOOP: servers close idle sessions, and a mail must not be the probe.
const idleCheck = 2 * time.Second

// SMTPTransport sends mail over one reused SMTP session (EHLO, STARTTLS,
// AUTH once; then MAIL, RCPT, DATA per message, RSET after a failed one).
// It redials after a network error or a 421. Send is called by one
// goroutine at a time.
type SMTPTransport struct {
	opts SMTPOptions
	log  *slog.Logger

	mu       sync.Mutex
	c        *smtp.Client
	lastUsed time.Time
}

var _ Transport = (*SMTPTransport)(nil)

// NewSMTPTransport returns a transport that connects on first use.
func NewSMTPTransport(opts SMTPOptions, log *slog.Logger) *SMTPTransport {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Helo == "" {
		opts.Helo, _ = os.Hostname()
		if opts.Helo == "" {
			opts.Helo = "localhost"
		}
	}
	if opts.Security == "" {
		opts.Security = SecurityStartTLS
	}
	if opts.Auth == "" {
		opts.Auth = "auto"
	}
	cfg := opts.TLSConfig
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		cfg = cfg.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = opts.Host // go-smtp's NewClient does not set it
	}
	opts.TLSConfig = cfg
	return &SMTPTransport{opts: opts, log: log}
}

// Send delivers msg to every recipient the server accepts. Refused
// recipients are reported in the Outcome; an error means the message was
// not accepted for anyone.
func (t *SMTPTransport) Send(ctx context.Context, env Envelope, msg []byte) (Outcome, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return Outcome{}, err
	}
	c, err := t.session(ctx)
	if err != nil {
		return Outcome{}, err
	}
	// A hard stop: closing the connection unblocks any read or write.
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	out, me := t.transaction(c, env, msg)
	if !stop() {
		t.drop()
		if me == nil {
			return out, nil
		}
		return out, ctx.Err()
	}
	t.lastUsed = time.Now()
	if me != nil {
		if me.Code == 0 || me.Code == 421 {
			t.drop() // the connection is broken or the server is closing it
		}
		return out, me
	}
	return out, nil
}

// Close ends the session politely (QUIT).
func (t *SMTPTransport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.c == nil {
		return nil
	}
	err := t.c.Quit()
	if err != nil {
		_ = t.c.Close()
	}
	t.c = nil
	return nil
}

func (t *SMTPTransport) drop() {
	if t.c != nil {
		_ = t.c.Close()
	}
	t.c = nil
}

// session returns a live client, probing a reused one and dialing a new
// one when needed.
func (t *SMTPTransport) session(ctx context.Context) (*smtp.Client, error) {
	if t.c != nil && time.Since(t.lastUsed) > idleCheck {
		if err := t.c.Noop(); err != nil {
			t.log.Debug("smtp session went stale; reconnecting", "err", err)
			t.drop()
		}
	}
	if t.c != nil {
		return t.c, nil
	}
	c, err := t.dial(ctx)
	if err != nil {
		return nil, err
	}
	t.c = c
	return c, nil
}

func (t *SMTPTransport) dial(ctx context.Context) (*smtp.Client, error) {
	o := t.opts
	addr := net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
	dctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, t.classify("connect", err)
	}
	// Until the session is set up, no step may wait longer than Timeout
	// (go-smtp's own greeting wait is 5 minutes).
	conn := &deadlineConn{Conn: raw, timeout: o.Timeout, clamp: true}
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	defer stop()
	tr := newTranscript(o.Transcript) // nil unless asked for

	var c *smtp.Client
	switch o.Security {
	case SecurityTLS:
		tc := tls.Client(conn, o.TLSConfig)
		if err := tc.HandshakeContext(dctx); err != nil {
			_ = raw.Close()
			return nil, t.classify("tls", err)
		}
		tr.encrypted(tc.ConnectionState())
		c = smtp.NewClient(tr.plain(tc))
	case SecurityStartTLS:
		c, err = smtp.NewClientStartTLS(tr.plain(conn), o.TLSConfig)
		if err != nil {
			_ = raw.Close()
			return nil, t.classify("starttls", err)
		}
		tr.afterSTARTTLS(c)
	default:
		c = smtp.NewClient(tr.plain(conn))
	}
	c.CommandTimeout = o.Timeout
	c.SubmissionTimeout = 2 * o.Timeout
	if err := c.Hello(o.Helo); err != nil {
		_ = c.Close()
		return nil, t.classify("ehlo", err)
	}
	if o.Security == SecurityStartTLS {
		// A server can send its banner and then fail the handshake lazily.
		if _, ok := c.TLSConnectionState(); !ok {
			_ = c.Close()
			return nil, &Error{Kind: KindConfig, Step: "starttls", Err: errors.New("connection is not encrypted after STARTTLS")}
		}
	}
	if err := t.login(ctx, c); err != nil {
		_ = c.Close()
		return nil, err
	}
	conn.clamp = false
	t.log.Debug("smtp session open", "server", addr, "security", string(o.Security))
	return c, nil
}

func (t *SMTPTransport) login(ctx context.Context, c *smtp.Client) error {
	o := t.opts
	if o.Auth == "none" || o.Username == "" {
		return nil
	}
	if o.Security == SecurityNone && !o.AllowInsecureAuth {
		return &Error{Kind: KindConfig, Step: "auth",
			Err:  errors.New("refusing to send the password over a connection without TLS"),
			Hint: "set security: starttls or tls, or allow_insecure_auth: true on a trusted network"}
	}
	_, offered := c.Extension("AUTH")
	if o.Tokens != nil {
		mech, me := t.chooseTokenAuth(c.SupportsAuth, offered)
		if me != nil {
			return me
		}
		return t.tokenLogin(ctx, c, mech)
	}
	client, me := t.chooseAuth(c.SupportsAuth, offered)
	if me != nil {
		return me
	}
	if err := c.Auth(client); err != nil {
		return t.classify("auth", err)
	}
	return nil
}

// transaction runs MAIL, RCPT for each recipient, and DATA. A refused
// recipient does not stop the others; after a failed transaction the
// session is reset so the next MAIL is not a "nested MAIL command".
func (t *SMTPTransport) transaction(c *smtp.Client, env Envelope, msg []byte) (Outcome, *Error) {
	var out Outcome
	// Where the server offers DSN (RFC 3461), ask for a bounce only on
	// failure or delay, with the headers only, naming the outbox entry;
	// go-smtp sends these parameters only to a server that offers DSN.
	if err := c.Mail(env.From, &smtp.MailOptions{Return: smtp.DSNReturnHeaders, EnvelopeID: env.ID}); err != nil {
		return out, t.failTx(c, "mail", err)
	}
	accepted := make([]string, 0, len(env.To))
	notify := &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed}}
	for _, rcpt := range env.To {
		if err := c.Rcpt(rcpt, notify); err != nil {
			me := t.classify("rcpt", err)
			if me.Code == 0 || me.Code == 421 {
				return out, me
			}
			out.Rejected = append(out.Rejected, Rejection{Rcpt: rcpt, Err: me})
			continue
		}
		accepted = append(accepted, rcpt)
	}
	if len(accepted) == 0 {
		t.reset(c)
		return out, nil
	}
	w, err := c.Data()
	if err != nil {
		return out, t.failTx(c, "data", err)
	}
	if _, err := w.Write(msg); err != nil {
		return out, t.classify("data", err)
	}
	if err := w.Close(); err != nil {
		// The transaction is over whatever the reply: no RSET needed.
		return out, t.classify("data", err)
	}
	out.Accepted = accepted
	return out, nil
}

func (t *SMTPTransport) failTx(c *smtp.Client, step string, err error) *Error {
	me := t.classify(step, err)
	if me.Code != 0 && me.Code != 421 {
		t.reset(c)
	}
	return me
}

// reset sends RSET. go-smtp's client then says EHLO again before its next
// command; NOOP makes that happen here, so a server that refuses a second
// EHLO (OpenSMTPD: 503) costs a reconnect instead of failing the next mail
// with a 503 that would bury it.
func (t *SMTPTransport) reset(c *smtp.Client) {
	if err := c.Reset(); err != nil {
		t.drop()
		return
	}
	if err := c.Noop(); err != nil {
		t.log.Debug("smtp session unusable after RSET; reconnecting", "err", err)
		t.drop()
	}
}

// deadlineConn bounds every write (go-smtp sets no deadline while the
// message body is written) and, while clamp is set, every deadline.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
	clamp   bool
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

func (c *deadlineConn) SetDeadline(d time.Time) error {
	if c.clamp {
		if limit := time.Now().Add(c.timeout); d.IsZero() || d.After(limit) {
			d = limit
		}
	}
	return c.Conn.SetDeadline(d)
}
