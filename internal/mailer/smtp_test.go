package mailer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/smtptest"
)

const (
	user     = "alerts@example.org"
	password = "s3cr3t-app-password"
	subject  = "Temperatura alta en salón: 31 °C"
	body     = "El invernadero está a 31 °C.\n"
)

var users = map[string]string{user: password}

// message composes the mail the tests send, as the rules would.
func message(t *testing.T, to ...string) []byte {
	t.Helper()
	now := time.Now()
	msg, err := Compose(Mail{From: "Alertas <" + user + ">", To: to, Subject: subject, Body: body,
		Date: now, MessageID: NewMessageID(now, user)})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// syncBuffer collects log output written from other goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func debugLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// transport connects to 127.0.0.1:port; it logs at debug level into the
// returned buffer.
func transport(t *testing.T, port int, o SMTPOptions) (*SMTPTransport, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	o.Host, o.Port = "127.0.0.1", port
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Helo == "" {
		o.Helo = "alertd.test"
	}
	tr := NewSMTPTransport(o, debugLogger(logs))
	t.Cleanup(func() { _ = tr.Close() })
	return tr, logs
}

// trusted trusts the test server's certificate, as smtp.tls.ca_file does.
func trusted(s *smtptest.Server) *tls.Config {
	return &tls.Config{RootCAs: s.CertPool, MinVersion: tls.VersionTLS12}
}

func login(s *smtptest.Server, o SMTPOptions) SMTPOptions {
	o.Username, o.Password, o.TLSConfig = user, password, trusted(s)
	return o
}

// send sends the test mail from user to the given recipients
// (ops@example.org when none).
func send(t *testing.T, tr *SMTPTransport, to ...string) (Outcome, error) {
	t.Helper()
	return sendFrom(t, tr, user, to...)
}

func sendFrom(t *testing.T, tr *SMTPTransport, from string, to ...string) (Outcome, error) {
	t.Helper()
	if len(to) == 0 {
		to = []string{"ops@example.org"}
	}
	return tr.Send(context.Background(), Envelope{From: from, To: to}, message(t, to...))
}

// sendErr sends and returns the *Error the send must fail with.
func sendErr(t *testing.T, tr *SMTPTransport) *Error {
	t.Helper()
	out, err := send(t, tr)
	if err == nil {
		t.Fatalf("send succeeded (%+v), want an error", out)
	}
	var me *Error
	if !errors.As(err, &me) {
		t.Fatalf("error %v (%T) is not a *mailer.Error", err, err)
	}
	return me
}

func count(cmds []string, prefix string) int {
	n := 0
	for _, c := range cmds {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func TestStartTLSAuthPlainDeliversIntactSubject(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: users})
	tr, _ := transport(t, srv.Port, login(srv, SMTPOptions{Security: SecurityStartTLS, Auth: "plain"}))
	out, err := send(t, tr)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.Accepted, []string{"ops@example.org"}) || len(out.Rejected) != 0 {
		t.Errorf("outcome %+v", out)
	}
	m := srv.WaitMessages(t, 1, 5*time.Second)[0]
	// Mail lines end in CRLF on the wire (RFC 5322 §2.1).
	if m.Subject != subject || strings.ReplaceAll(m.Body, "\r\n", "\n") != body {
		t.Errorf("received subject %q body %q, want %q %q", m.Subject, m.Body, subject, body)
	}
	if m.AuthUser != user || m.From != user {
		t.Errorf("mail from %q sent as %q, want %q", m.From, m.AuthUser, user)
	}
	// Credentials only after STARTTLS, and the configured HELO name on the
	// encrypted session.
	cmds := srv.Commands()
	tlsAt, authAt := slices.Index(cmds, "STARTTLS"), slices.Index(cmds, "AUTH PLAIN "+user)
	if tlsAt < 0 || authAt < tlsAt || cmds[tlsAt+1] != "EHLO alertd.test" {
		t.Errorf("commands %q: want STARTTLS, EHLO alertd.test, then AUTH PLAIN", cmds)
	}
}

func TestAuthLoginWhateverThePrompts(t *testing.T) {
	for _, prompts := range [][2]string{
		{"Username:", "Password:"},
		{"User Name\x00", "Password\x00"}, // Microsoft
		{"username:", "password:"},
	} {
		t.Run(strings.ReplaceAll(prompts[0], "\x00", `\0`), func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: users, LoginPrompts: prompts})
			tr, _ := transport(t, srv.Port, login(srv, SMTPOptions{Security: SecurityStartTLS, Auth: "login"}))
			if _, err := send(t, tr); err != nil {
				t.Fatal(err)
			}
			if m := srv.WaitMessages(t, 1, 5*time.Second)[0]; m.AuthUser != user {
				t.Errorf("logged in as %q", m.AuthUser)
			}
			if !slices.Contains(srv.Commands(), "AUTH LOGIN "+user) {
				t.Errorf("commands %q, want AUTH LOGIN", srv.Commands())
			}
		})
	}
}

func TestAuthAutoPicksAnOfferedMechanism(t *testing.T) {
	for _, tc := range []struct {
		offered []string
		want    string
	}{
		{[]string{"LOGIN", "PLAIN"}, "PLAIN"},
		{[]string{"PLAIN"}, "PLAIN"},
		{[]string{"LOGIN"}, "LOGIN"},
	} {
		t.Run(strings.Join(tc.offered, "+"), func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: users, Mechanisms: tc.offered})
			tr, _ := transport(t, srv.Port, login(srv, SMTPOptions{Security: SecurityStartTLS})) // Auth "" = auto
			if _, err := send(t, tr); err != nil {
				t.Fatal(err)
			}
			if cmds := srv.Commands(); count(cmds, "AUTH ") != 1 || !slices.Contains(cmds, "AUTH "+tc.want+" "+user) {
				t.Errorf("commands %q, want one AUTH %s", cmds, tc.want)
			}
		})
	}
}

func TestAuthMechanismNotOffered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    smtptest.Options
		auth    string
		message string
	}{
		{"plain wanted, login offered", smtptest.Options{Users: users, Mechanisms: []string{"LOGIN"}}, "plain", "offers AUTH LOGIN but not PLAIN"},
		{"login wanted, plain offered", smtptest.Options{Users: users, Mechanisms: []string{"PLAIN"}}, "login", "offers AUTH PLAIN but not LOGIN"},
		{"no AUTH at all", smtptest.Options{}, "auto", "offers no AUTH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.TLS = smtptest.StartTLS
			srv := smtptest.Start(t, tc.opts)
			tr, _ := transport(t, srv.Port, login(srv, SMTPOptions{Security: SecurityStartTLS, Auth: tc.auth}))
			me := sendErr(t, tr)
			if me.Kind != KindConfig || !strings.Contains(me.Error(), tc.message) || me.Hint == "" {
				t.Errorf("got %v (kind %s), want config error saying %q with a hint", me, me.Kind, tc.message)
			}
			if cmds := srv.Commands(); count(cmds, "AUTH") != 0 || count(cmds, "MAIL") != 0 {
				t.Errorf("commands %q: nothing may be tried without a usable login", cmds)
			}
		})
	}
}

func TestImplicitTLS(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.ImplicitTLS, Users: users})
	tr, _ := transport(t, srv.Port, login(srv, SMTPOptions{Security: SecurityTLS}))
	if _, err := send(t, tr); err != nil {
		t.Fatal(err)
	}
	if m := srv.WaitMessages(t, 1, 5*time.Second)[0]; m.Subject != subject || m.AuthUser != user {
		t.Errorf("got %q as %q", m.Subject, m.AuthUser)
	}
	if slices.Contains(srv.Commands(), "STARTTLS") {
		t.Errorf("STARTTLS on an implicit TLS connection: %q", srv.Commands())
	}
}

func TestSecurityMismatch(t *testing.T) {
	t.Run("security tls on a STARTTLS port", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS})
		tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityTLS, TLSConfig: trusted(srv)})
		me := sendErr(t, tr)
		if me.Kind != KindConfig || !strings.Contains(me.Hint, "expects security: starttls") {
			t.Errorf("got %v (kind %s)", me, me.Kind)
		}
	})
	t.Run("security starttls on an implicit TLS port", func(t *testing.T) {
		// The client waits for a greeting the server never sends: it is
		// waiting for a TLS handshake.
		srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.ImplicitTLS})
		tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityStartTLS, TLSConfig: trusted(srv), Timeout: 500 * time.Millisecond})
		me := sendErr(t, tr)
		if !isTimeout(me.Err) || !me.Retryable() || !strings.Contains(me.Hint, "security: tls") {
			t.Errorf("got %v (kind %s), want a timeout whose hint suggests security: tls", me, me.Kind)
		}
	})
	t.Run("security starttls, server without STARTTLS", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.NoTLS})
		tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityStartTLS})
		me := sendErr(t, tr)
		if me.Kind != KindConfig || !strings.Contains(me.Error(), "does not offer STARTTLS") {
			t.Errorf("got %v (kind %s)", me, me.Kind)
		}
	})
}

func TestCertificateProblems(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS})
	t.Run("private CA without ca_file", func(t *testing.T) {
		tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityStartTLS}) // system roots only
		me := sendErr(t, tr)
		if me.Kind != KindConfig || !strings.Contains(me.Hint, "ca_file") {
			t.Errorf("got %v (kind %s)", me, me.Kind)
		}
	})
	t.Run("certificate for another name", func(t *testing.T) {
		cfg := trusted(srv)
		cfg.ServerName = "smtp.example.org" // the certificate is for 127.0.0.1 and localhost
		tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityStartTLS, TLSConfig: cfg})
		me := sendErr(t, tr)
		if me.Kind != KindConfig || !strings.Contains(me.Hint, "not valid for") {
			t.Errorf("got %v (kind %s)", me, me.Kind)
		}
	})
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d mails went over an unverified connection", n)
	}
}

func TestWrongPasswordSaysSoAndNeverShowsIt(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{user: "the-real-one"}})
	tr, logs := transport(t, srv.Port, login(srv, SMTPOptions{Security: SecurityStartTLS}))
	me := sendErr(t, tr)
	if me.Kind != KindAuth || me.Code != 535 || !me.Retryable() || !strings.Contains(me.Hint, "app password") {
		t.Errorf("got %v (kind %s, code %d)", me, me.Kind, me.Code)
	}
	// Log the error as the deliverer does, so the check below covers the
	// error's log form as well as the transport's own lines.
	debugLogger(logs).Error("cannot deliver mail", "err", me)
	for what, s := range map[string]string{"error": me.Error(), "logs": logs.String()} {
		if strings.Contains(s, password) {
			t.Errorf("the password appears in the %s: %s", what, s)
		}
	}
	if !strings.Contains(logs.String(), "535") {
		t.Errorf("logs %q do not show the failure", logs.String())
	}
}

func TestNoPasswordOverPlaintext(t *testing.T) {
	// The server would take AUTH in the clear: the client must refuse.
	srv := smtptest.Start(t, smtptest.Options{Users: users, AllowInsecureAuth: true})
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone, Username: user, Password: password, Auth: "login"})
	me := sendErr(t, tr)
	if me.Kind != KindConfig || !strings.Contains(me.Error(), "without TLS") || !strings.Contains(me.Hint, "allow_insecure_auth") {
		t.Errorf("got %v (kind %s)", me, me.Kind)
	}
	if n := count(srv.Commands(), "AUTH"); n != 0 {
		t.Errorf("credentials were sent in the clear: %q", srv.Commands())
	}

	// allow_insecure_auth is the operator's explicit choice for a LAN relay.
	tr, _ = transport(t, srv.Port, SMTPOptions{Security: SecurityNone, Username: user, Password: password, Auth: "login", AllowInsecureAuth: true})
	if _, err := send(t, tr); err != nil {
		t.Fatalf("with allow_insecure_auth: %v", err)
	}
}

func TestPerRecipientOutcome(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.FailRcpt("gone@example.org", -1, 550, [3]int{5, 1, 1}, "no such user")
	srv.FailRcpt("full@example.org", -1, 450, [3]int{4, 2, 2}, "mailbox full")
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone})
	out, err := send(t, tr, "gone@example.org", "ops@example.org", "full@example.org")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.Accepted, []string{"ops@example.org"}) || len(out.Rejected) != 2 {
		t.Fatalf("outcome %+v", out)
	}
	if r := out.Rejected[0]; r.Rcpt != "gone@example.org" || r.Err.Kind != KindPermanent || r.Err.Retryable() ||
		r.Err.Code != 550 || r.Err.ServerText != "no such user" {
		t.Errorf("550 recipient: %+v %v", r, r.Err)
	}
	if r := out.Rejected[1]; r.Rcpt != "full@example.org" || r.Err.Kind != KindTemporary || !r.Err.Retryable() {
		t.Errorf("450 recipient: %+v %v", r, r.Err)
	}
	if m := srv.WaitMessages(t, 1, 5*time.Second)[0]; !slices.Equal(m.To, []string{"ops@example.org"}) {
		t.Errorf("delivered to %v", m.To)
	}
}

// After a transaction that went wrong half-way, the session must be reset
// (RFC 5321 §4.1.1.5), or the next MAIL is a "nested MAIL command" to
// strict servers. aiosmtpd is one; go-smtp's own server is not, so it
// cannot catch this.
func TestStrictPeerNextMailAfterRefusedTransaction(t *testing.T) {
	srv := smtptest.StartStrict(t, smtptest.StrictOptions{User: user, Password: password})
	// aiosmtpd prompts LOGIN with "User Name\0" and "Password\0".
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone, AllowInsecureAuth: true, Auth: "login", Username: user, Password: password})
	for _, tc := range []struct {
		name     string
		from     string
		to       []string
		wantCode int // of the error, or of the one rejection
	}{
		{"all recipients refused", user, []string{"reject-me@example.org"}, 550},
		{"all recipients deferred", user, []string{"later@example.org"}, 450},
		{"sender refused", "reject@example.org", nil, 550},
		{"sender deferred", "later@example.org", nil, 451},
		{"message refused after DATA", user, []string{"spam-trap@example.org"}, 554},
	} {
		out, err := sendFrom(t, tr, tc.from, tc.to...)
		code := 0
		var me *Error
		switch {
		case errors.As(err, &me):
			code = me.Code
		case err == nil && len(out.Accepted) == 0 && len(out.Rejected) == 1:
			code = out.Rejected[0].Err.Code
		}
		if code != tc.wantCode {
			t.Errorf("%s: outcome %+v, err %v; want code %d", tc.name, out, err, tc.wantCode)
		}
		if _, err := send(t, tr); err != nil {
			t.Fatalf("next mail after %s: %v", tc.name, err)
		}
	}
	msgs := srv.WaitMessages(t, 5, 5*time.Second)
	for _, m := range msgs {
		if m.Subject != subject || m.From != user || !slices.Equal(m.To, []string{"ops@example.org"}) {
			t.Errorf("strict peer got %q from %q to %v", m.Subject, m.From, m.To)
		}
	}
}

// go-smtp's client says EHLO again after RSET (harmless by RFC 5321
// §4.1.4). OpenSMTPD refuses a second EHLO with 503: that must cost a new
// connection, not the next mail (a 503 to MAIL would bury it as
// permanently refused).
func TestNextMailWhenTheServerRefusesARepeatedEHLO(t *testing.T) {
	srv := smtptest.StartStrict(t, smtptest.StrictOptions{RefuseRepeatedEHLO: true})
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone})
	if out, err := send(t, tr, "reject-me@example.org"); err != nil || len(out.Rejected) != 1 {
		t.Fatalf("all recipients refused: %+v, %v", out, err)
	}
	if _, err := send(t, tr); err != nil {
		t.Fatalf("next mail after all recipients were refused: %v", err)
	}
	var me *Error
	if _, err := sendFrom(t, tr, "later@example.org"); !errors.As(err, &me) || me.Code != 451 {
		t.Fatalf("MAIL FROM:<later@...>: %v, want 451", err)
	}
	if _, err := send(t, tr); err != nil {
		t.Fatalf("next mail after a deferred MAIL: %v", err)
	}
	srv.WaitMessages(t, 2, 5*time.Second)
}

func TestResetAfterAllRecipientsRefused(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.FailRcpt("gone@example.org", -1, 550, [3]int{5, 1, 1}, "no such user")
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone})
	if out, err := send(t, tr, "gone@example.org"); err != nil || len(out.Accepted) != 0 {
		t.Fatalf("outcome %+v, %v", out, err)
	}
	if _, err := send(t, tr); err != nil {
		t.Fatal(err)
	}
	// go-smtp's client follows RSET with a new EHLO, which the server
	// reports as one more reset: look for RSET anywhere in between.
	cmds := srv.Commands()
	rcpt := slices.Index(cmds, "RCPT <gone@example.org>")
	next := slices.IndexFunc(cmds[rcpt+1:], func(c string) bool { return strings.HasPrefix(c, "MAIL") })
	if rcpt < 0 || next < 0 || !slices.Contains(cmds[rcpt+1:rcpt+1+next], "RSET") {
		t.Errorf("commands %q: want RSET between the refused RCPT and the next MAIL", cmds)
	}
}

func TestSessionReuse(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: users})
	tr, _ := transport(t, srv.Port, login(srv, SMTPOptions{Security: SecurityStartTLS}))
	for range 3 {
		if _, err := send(t, tr); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.Conns(); n != 1 {
		t.Errorf("%d connections for 3 mails in a row, want 1", n)
	}
	if n := count(srv.Commands(), "AUTH"); n != 1 {
		t.Errorf("logged in %d times, want once per session", n)
	}
	if n := len(srv.WaitMessages(t, 3, 5*time.Second)); n != 3 {
		t.Errorf("%d mails", n)
	}
}

func TestRedialAfter421(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone})
	if _, err := send(t, tr); err != nil {
		t.Fatal(err)
	}
	srv.Fail("MAIL", 1, 421, [3]int{4, 3, 2}, "Service shutting down")
	me := sendErr(t, tr)
	if !me.Retryable() || me.Code != 421 {
		t.Fatalf("421: %v", me)
	}
	if _, err := send(t, tr); err != nil {
		t.Fatalf("after 421: %v", err)
	}
	if n := srv.Conns(); n != 2 {
		t.Errorf("%d connections, want a new one after 421", n)
	}
	if n := len(srv.Messages()); n != 2 {
		t.Errorf("%d mails delivered, want 2", n)
	}
}

func TestDataReplies(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone})

	srv.Fail("DATA", 1, 451, [3]int{4, 3, 0}, "Requested action aborted: local error")
	me := sendErr(t, tr)
	if me.Kind != KindTemporary || !me.Retryable() || me.Code != 451 {
		t.Errorf("451: %v (kind %s)", me, me.Kind)
	}

	srv.Fail("DATA", 1, 554, [3]int{5, 7, 1}, "Message rejected as spam")
	me = sendErr(t, tr)
	if me.Kind != KindPermanent || me.Retryable() || me.ServerText != "Message rejected as spam" ||
		!strings.Contains(me.Error(), "554 5.7.1") {
		t.Errorf("554: %v (kind %s)", me, me.Kind)
	}

	if _, err := send(t, tr); err != nil {
		t.Errorf("the session must still work after refused messages: %v", err)
	}
	if n, c := len(srv.Messages()), srv.Conns(); n != 1 || c != 1 {
		t.Errorf("%d mails over %d connections, want 1 over 1", n, c)
	}
}

func TestServerOutage(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDown(true)
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone})
	me := sendErr(t, tr)
	if me.Kind != KindNetwork || !me.Retryable() {
		t.Errorf("during the outage: %v (kind %s)", me, me.Kind)
	}
	srv.SetDown(false)
	if _, err := send(t, tr); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}

// A server that accepts the connection and never speaks must not hold up
// shutdown beyond the caller's context.
func TestContextEndsAStalledSend(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c // held open, silent
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		select {
		case c := <-accepted:
			_ = c.Close()
		default:
		}
	})
	tr, _ := transport(t, l.Addr().(*net.TCPAddr).Port, SMTPOptions{Security: SecurityNone, Timeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = tr.Send(ctx, Envelope{From: user, To: []string{"ops@example.org"}}, message(t, "ops@example.org"))
	if err == nil {
		t.Fatal("send to a silent server succeeded")
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("send took %s although the context ended after 100ms", elapsed)
	}
}
