package smtpin

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// session is one SMTP session: go-smtp starts it at HELO or EHLO, and
// again after STARTTLS.
type session struct {
	srv  *Server
	c    *client
	conn *smtp.Conn
	helo string
	tls  bool

	mu        sync.Mutex // go-smtp may call Reset while Data runs (BDAT)
	user      string
	authFails int
	from      string
	to, relay []string
}

var _ smtp.AuthSession = (*session)(nil)

// envelope is what Data needs from a session, copied under its lock.
type envelope struct {
	ip         netip.Addr
	helo, user string
	tls        bool
	from       string
	to, relay  []string
}

func (s *Server) newSession(conn *smtp.Conn) (smtp.Session, error) {
	c := clientOf(conn.Conn())
	if c == nil || !s.pol.allowed(c.ip) { // the listener refused them already
		return nil, errRelayDenied
	}
	if c.closing() {
		return nil, errClosing
	}
	_, isTLS := conn.TLSConnectionState()
	return &session{srv: s, c: c, conn: conn, helo: sanitizeHelo(conn.Hostname()), tls: isTLS}, nil
}

func (se *session) Mail(from string, _ *smtp.MailOptions) error {
	if se.c.closing() {
		return errClosing
	}
	se.mu.Lock()
	defer se.mu.Unlock()
	// go-smtp lets a second MAIL through and keeps the recipients of the
	// first; here it starts a fresh envelope.
	se.from, se.to, se.relay = "", nil, nil
	if se.srv.pol.creds != nil && se.user == "" {
		return se.c.refuse(AuthFailed, errAuthRequired, "MAIL before AUTH")
	}
	if from != "" && !validMailbox(from, true) {
		return se.c.refuse(Error, errBadSender, "sender address cannot be passed on")
	}
	se.from = from
	return nil
}

func (se *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if se.c.closing() {
		return errClosing
	}
	se.mu.Lock()
	defer se.mu.Unlock()
	if se.srv.pol.creds != nil && se.user == "" {
		return se.c.refuse(AuthFailed, errAuthRequired, "RCPT before AUTH")
	}
	if slices.ContainsFunc(se.to, func(t string) bool { return strings.EqualFold(t, to) }) {
		return nil
	}
	if len(se.to) >= se.srv.opts.MaxRecipients {
		return se.c.refuse(Error, errTooManyRcpts, "too many recipients", keyRcpt, to)
	}
	if !strings.EqualFold(to, "postmaster") && !validMailbox(to, false) {
		return se.c.refuse(RelayDenied, errBadRecipient, "recipient address cannot be passed on", keyRcpt, to)
	}
	switch routeOf(to, se.srv.opts.Hostname, se.srv.pol.relay) {
	case routeSelf:
		se.to = append(se.to, to)
	case routeRelay:
		se.to, se.relay = append(se.to, to), append(se.relay, to)
	default:
		return se.c.refuse(RelayDenied, errRelayDenied, "recipient is neither alertd nor in relay_to", keyRcpt, to)
	}
	return nil
}

func (se *session) Reset() {
	se.mu.Lock()
	defer se.mu.Unlock()
	se.from, se.to, se.relay = "", nil, nil
}

func (se *session) Logout() error { return nil }

func (se *session) envelope() envelope {
	se.mu.Lock()
	defer se.mu.Unlock()
	return envelope{ip: se.c.ip, helo: se.helo, user: se.user, tls: se.tls,
		from: se.from, to: slices.Clone(se.to), relay: slices.Clone(se.relay)}
}

// Data reads the message, prepares the Mail and answers only after the
// Sink has committed it.
func (se *session) Data(r io.Reader) error {
	if se.c.closing() {
		return errClosing
	}
	if !se.srv.enter() {
		return errClosing
	}
	defer se.srv.leave()
	// go-smtp's deadline is the one set when it read the DATA line.
	_ = se.conn.Conn().SetReadDeadline(time.Now().Add(se.srv.opts.DataTimeout))
	data, err := io.ReadAll(r)
	if err != nil {
		return se.readFailed(err)
	}
	env := se.envelope()
	if len(env.to) == 0 { // all refused, or a second MAIL after them
		return se.c.refuse(Error, errNoRecipients, "DATA without accepted recipients")
	}
	return se.commit(se.srv.prepare(env, data))
}

func (se *session) readFailed(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, smtp.ErrDataTooLarge):
		return se.c.refuse(TooBig, errTooBig, "message larger than max_message_bytes")
	case errors.Is(err, smtp.ErrTooLongLine):
		se.c.end(Error, "line too long", replyText(errLineTooLong))
		return errLineTooLong
	case errors.As(err, &ne) && ne.Timeout(): // logged as it happened
		return errTimeout
	case errors.Is(err, smtp.ErrDataReset): // RSET or QUIT amid BDAT
		return err
	}
	se.c.end(Error, "connection lost in DATA", "", keyErr, err.Error())
	return errClosing
}

// commit hands the mail to the Sink and turns its answer into the reply.
func (se *session) commit(m *Mail) error {
	ctx, cancel := context.WithTimeout(se.srv.ctx, se.srv.opts.AcceptTimeout)
	defer cancel()
	out, err := se.srv.sink.Accept(ctx, m)
	switch {
	case err != nil:
		return se.c.refuse(Error, errCommit, "could not commit the mail", keyID, m.ID, keyErr, err.Error())
	case out.Held == HeldRateLimited:
		return se.c.refuse(RateLimited, rateLimited(out.RetryAfter), "rate limited", keyID, m.ID, keySender, m.Sender)
	case out.Held != NotHeld && out.Held != HeldDuplicate:
		return se.c.refuse(Error, errCommit, "the Sink held the mail for an unknown reason", keyID, m.ID, keyHeld, string(out.Held))
	}
	id := oneLine(cmp.Or(out.ID, m.ID), 64) // a newline would split the reply
	se.c.log.Info("smtp ingress accepted", keyID, id, keySender, m.Sender, keyUser, m.User,
		keyRelay, len(m.Relay), keyHeld, string(out.Held))
	se.srv.opts.Count(Accepted)
	if out.Held == HeldDuplicate {
		return accepted("OK: same as a recent mail, held back")
	}
	return accepted("OK: queued as " + id)
}

func (se *session) AuthMechanisms() []string {
	if se.srv.pol.creds == nil {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (se *session) Auth(mech string) (sasl.Server, error) {
	if se.c.closing() {
		return nil, errClosing
	}
	if se.srv.pol.creds == nil {
		return nil, se.c.refuse(AuthFailed, errAuthDisabled, "AUTH without users configured")
	}
	malformed := func() error { return se.c.refuse(AuthFailed, errAuthMalformed, "malformed AUTH response") }
	switch mech { // go-smtp upper-cases it
	case sasl.Plain:
		return plainServer{sasl.NewPlainServer(se.login), malformed}, nil
	case sasl.Login:
		return &loginServer{check: se.login, malformed: malformed}, nil
	}
	return nil, se.c.refuse(AuthFailed, errAuthMechanism, "unsupported AUTH mechanism")
}

// login checks credentials. PLAIN's authorization identity may be empty,
// blank or the user's own (RFC 4616 §2); any other is a forgery. The
// user name is logged only when it exists, since a mistyped one is often
// a password.
func (se *session) login(authz, user, pass string) error {
	known, ok := se.srv.pol.creds.check(user, pass)
	var attrs []any
	if known {
		attrs = []any{keyUser, user}
	}
	reason, reply := "wrong password", errAuthFailed
	switch {
	case strings.TrimSpace(authz) != "" && authz != user:
		ok, reason, reply = false, "PLAIN authorization identity names another user", errAuthForged
	case !known:
		reason = "unknown user"
	}
	se.mu.Lock()
	defer se.mu.Unlock()
	if ok {
		se.user = user
		se.c.log.Debug("smtp ingress login", keyUser, user)
		return nil
	}
	if se.authFails++; se.authFails >= maxAuthFailure {
		se.c.end(AuthFailed, reason+"; too many failed logins", replyText(errTooManyLogins), attrs...)
		return errTooManyLogins
	}
	return se.c.refuse(AuthFailed, reply, reason, attrs...)
}
