package smtpin

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/emersion/go-smtp"
)

// client is one connection as go-smtp reads and writes it. It sits below
// go-smtp to see what a session is not told (wire.go): the replies
// go-smtp gives by itself, so that every refusal is logged and counted
// once whoever made it; and it can hang up after the reply to a refusal
// that ends the session.
type client struct {
	net.Conn
	ip     netip.Addr
	srv    *Server
	log    *slog.Logger
	once   sync.Once
	hangup atomic.Bool // set: the next read sees EOF, after the pending reply is written

	// Read and Write run on go-smtp's goroutine for the connection.
	plain     bool   // the wire is plaintext (false once STARTTLS began)
	raw       bool   // a message or a BDAT chunk is being read, not commands
	held      []byte // bytes read after the last whole command line
	greetings int    // 220 replies: the second one starts TLS
	partial   []byte // a reply line written in pieces

	mu        sync.Mutex // go-smtp runs Session.Data on a goroutine of its own for BDAT
	accounted bool       // the next error reply was logged already
	ending    bool       // the session's end was logged; nothing more is
	refusals  int
}

func newClient(nc net.Conn, ip netip.Addr, srv *Server) *client {
	return &client{Conn: nc, ip: ip, srv: srv, plain: true, log: srv.opts.Log.With(keyClient, ip.String())}
}

// clientOf finds the client under what go-smtp holds: after STARTTLS it
// holds a *tls.Conn over it.
func clientOf(nc net.Conn) *client {
	for {
		switch c := nc.(type) {
		case *client:
			return c
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return nil
		}
	}
}

func (c *client) Close() error {
	var err error
	c.once.Do(func() {
		err = c.Conn.Close()
		c.srv.ln.forget(c, true)
	})
	return err
}

// refuse logs and counts a refusal a session makes, once, and returns the
// reply to give. After maxRefusals the reply becomes 421 and the
// connection ends.
func (c *client) refuse(r Result, reply *smtp.SMTPError, reason string, attrs ...any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ending {
		return errClosing
	}
	c.refusals++
	if c.refusals >= maxRefusals {
		c.endLocked(r, reason+"; too many refused commands", replyText(errTooManyRefused), attrs...)
		return errTooManyRefused
	}
	c.accounted = true
	c.srv.logRefusal(c.log, r, reason, replyText(reply), attrs...)
	return reply
}

// end logs and counts why the session ends, then hangs up after the
// reply being written.
func (c *client) end(r Result, reason, reply string, attrs ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked(r, reason, reply, attrs...)
}

func (c *client) endLocked(r Result, reason, reply string, attrs ...any) {
	if c.ending {
		return
	}
	c.ending, c.accounted = true, true
	c.hangup.Store(true)
	c.srv.logRefusal(c.log, r, reason, reply, attrs...)
}

// closing reports whether the session is ending: its remaining commands
// get 421.
func (c *client) closing() bool { return c.hangup.Load() }

func replyText(e *smtp.SMTPError) string {
	return fmt.Sprintf("%d %d.%d.%d %s", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}
