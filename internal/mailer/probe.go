package mailer

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
)

// SetTranscript makes the sessions t opens from now on write their
// transcript to w (see SMTPOptions.Transcript). Call it before t is used.
func (t *SMTPTransport) SetTranscript(w io.Writer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.opts.Transcript = w
}

// Probe is what a session set up without sending anything showed.
type Probe struct {
	Server   string               // host:port
	Security Security             // as configured
	TLS      *tls.ConnectionState // nil without TLS
	User     string               // logged in as; "" when no login is configured
}

// String says in plain words what worked.
func (p Probe) String() string {
	s := "connected to " + p.Server
	switch {
	case p.TLS != nil && p.Security == SecurityStartTLS:
		s += ", STARTTLS: " + DescribeTLS(*p.TLS)
	case p.TLS != nil:
		s += ", implicit TLS: " + DescribeTLS(*p.TLS)
	default:
		s += ", without TLS (security: none)"
	}
	if p.User != "" {
		s += fmt.Sprintf(", logged in as %s", p.User)
	} else {
		s += ", no login configured"
	}
	return s
}

// Probe sets up a session as a delivery does — connect, EHLO, STARTTLS,
// AUTH — and ends it with QUIT, never MAIL: it checks the settings and
// sends nothing. The session is its own, not the one Send reuses. The
// error is an *Error, with the hint for the classic mistakes.
func (t *SMTPTransport) Probe(ctx context.Context) (Probe, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.opts
	p := Probe{Server: net.JoinHostPort(o.Host, strconv.Itoa(o.Port)), Security: o.Security}
	c, err := t.dial(ctx)
	if err != nil {
		return p, err
	}
	if cs, ok := c.TLSConnectionState(); ok {
		p.TLS = &cs
	}
	if o.Auth != "none" && o.Username != "" {
		p.User = o.Username
	}
	if err := c.Quit(); err != nil {
		_ = c.Close() // the checks passed: a server that hangs up at QUIT is no problem
	}
	return p, nil
}
