package mailer

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"

	"github.com/emersion/go-smtp"
)

// Redacted replaces every AUTH payload in a transcript.
const Redacted = "<redacted>"

// transcript writes an SMTP session to w as it happens, one "C: " (alertd)
// or "S: " (the server) line per protocol line, and a "TLS: " line when the
// connection becomes encrypted. Every AUTH payload is replaced by
// <redacted> before anything is written: the AUTH command's initial
// response, and every client line after a 334 challenge until the server
// answers something other than 334. That rule knows no mechanism, so it
// covers PLAIN, LOGIN and the OAuth2 ones alike (their tokens, and the
// empty line that answers an XOAUTH2 error challenge).
//
// It sees plaintext only: below TLS on a plaintext connection until
// STARTTLS is accepted, above TLS with implicit TLS, and through go-smtp's
// DebugWriter after STARTTLS, since go-smtp makes that TLS connection
// itself. DebugWriter does not say which side wrote, so those lines are
// told apart by the protocol: go-smtp's client waits for each reply before
// its next command, every reply line begins with three digits and a space
// or a hyphen (RFC 5321 section 4.2), no command, base64 payload or
// dot-stuffed message line does outside DATA, and the message itself runs
// from the 354 reply to the lone ".".
//
// A nil *transcript is valid and does nothing: sessions without one pay
// nothing.
type transcript struct {
	mu      sync.Mutex
	w       io.Writer
	partial [3][]byte // an unfinished line per side
	auth    bool      // AUTH sent, no final reply yet: client lines are secret
	data    bool      // between 354 and the lone ".": client lines are the message
	starttl bool      // STARTTLS sent, reply pending
	tlsOn   bool      // the raw connection carries TLS now: nothing to read there
	tlsSaid bool      // the TLS line was written
	// tlsState reports the TLS connection go-smtp made after STARTTLS.
	tlsState func() (tls.ConnectionState, bool)
}

type side int

const (
	client side = iota
	server
	either // DebugWriter: told apart by the protocol
)

func newTranscript(w io.Writer) *transcript {
	if w == nil {
		return nil
	}
	return &transcript{w: w}
}

// plain returns c, recording what passes through it. Data on the raw
// connection after STARTTLS is ciphertext and is not recorded.
func (t *transcript) plain(c net.Conn) net.Conn {
	if t == nil {
		return c
	}
	return &transcriptConn{Conn: c, t: t}
}

// encrypted records the TLS connection just made (implicit TLS).
func (t *transcript) encrypted(cs tls.ConnectionState) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sayTLS(cs)
}

// afterSTARTTLS follows the session through c's DebugWriter from here on.
func (t *transcript) afterSTARTTLS(c *smtp.Client) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.tlsState = c.TLSConnectionState
	t.mu.Unlock()
	c.DebugWriter = debugSide{t}
}

// debugSide is go-smtp's DebugWriter: both sides, in order.
type debugSide struct{ t *transcript }

func (d debugSide) Write(p []byte) (int, error) {
	d.t.record(either, p)
	return len(p), nil
}

type transcriptConn struct {
	net.Conn
	t *transcript
}

func (c *transcriptConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.t.record(server, p[:n])
	}
	return n, err
}

func (c *transcriptConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.t.record(client, p[:n])
	}
	return n, err
}

func (t *transcript) record(s side, p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s != either && t.tlsOn {
		return // TLS records on the raw connection
	}
	if s == either && !t.tlsSaid && t.tlsState != nil {
		// The first bytes after STARTTLS went through a completed
		// handshake: say what it gave before them.
		if cs, ok := t.tlsState(); ok {
			t.sayTLS(cs)
		}
	}
	buf := append(t.partial[s], p...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		t.line(s, string(bytes.TrimRight(buf[:i], "\r")))
		buf = buf[i+1:]
		if s != either && t.tlsOn {
			buf = nil // what follows the 220 is the handshake
			break
		}
	}
	t.partial[s] = append(t.partial[s][:0], buf...)
}

// line writes one protocol line, redacted as it must be.
func (t *transcript) line(s side, l string) {
	if s == either {
		s = client
		if !t.data && isReply(l) {
			s = server
		}
	}
	if s == server {
		t.serverLine(l)
		return
	}
	switch {
	case t.data:
		if l == "." {
			t.data = false
		}
	case t.auth:
		l = Redacted
	case hasWord(l, "AUTH"):
		t.auth = true
		if f := strings.Fields(l); len(f) > 2 {
			l = f[0] + " " + f[1] + " " + Redacted
		}
	case hasWord(l, "STARTTLS"):
		t.starttl = true
	}
	fmt.Fprintln(t.w, strings.TrimRight("C: "+l, " "))
}

func (t *transcript) serverLine(l string) {
	fmt.Fprintf(t.w, "S: %s\n", l)
	if len(l) > 3 && l[3] == '-' {
		return // more lines of the same reply follow
	}
	code := l
	if len(code) > 3 {
		code = code[:3]
	}
	switch {
	case t.auth:
		t.auth = code == "334"
	case code == "354":
		t.data = true
	case t.starttl:
		t.starttl = false
		t.tlsOn = code == "220"
	}
}

func (t *transcript) sayTLS(cs tls.ConnectionState) {
	t.tlsSaid = true
	fmt.Fprintf(t.w, "TLS: %s\n", DescribeTLS(cs))
}

// DescribeTLS says in plain words what a TLS connection is: its version,
// whether the certificate was verified, and whose it is.
func DescribeTLS(cs tls.ConnectionState) string {
	v := tls.VersionName(cs.Version)
	switch {
	case len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0:
		leaf := cs.VerifiedChains[0][0]
		return fmt.Sprintf("%s, certificate verified: %s", v, certName(leaf))
	case len(cs.PeerCertificates) > 0:
		return fmt.Sprintf("%s, certificate NOT verified (insecure_skip_verify): %s", v, certName(cs.PeerCertificates[0]))
	}
	return v
}

func certName(c *x509.Certificate) string {
	s := "subject " + c.Subject.String()
	if c.Issuer.String() != c.Subject.String() {
		s += ", issued by " + c.Issuer.String()
	}
	return s + ", valid until " + c.NotAfter.UTC().Format("2006-01-02")
}

// isReply reports whether l is a reply line: three digits, then a space, a
// hyphen or nothing.
func isReply(l string) bool {
	if len(l) < 3 || (len(l) > 3 && l[3] != ' ' && l[3] != '-') {
		return false
	}
	for i := range 3 {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

// hasWord reports whether the command l is verb (any case).
func hasWord(l, verb string) bool {
	return len(l) >= len(verb) && strings.EqualFold(l[:len(verb)], verb) &&
		(len(l) == len(verb) || l[len(verb)] == ' ')
}
