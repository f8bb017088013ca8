package mailer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/smtptest"
)

const password = "s3cr3t-app-password"

var users = map[string]string{"alerts@example.org": password}

func message(t *testing.T, subject string) []byte {
	t.Helper()
	msg, err := Compose(Mail{
		From: "Alertas <alerts@example.org>", To: []string{"ops@example.org"}, Subject: subject,
		Body: "El invernadero está a 31 °C.\n", Date: time.Now(), MessageID: NewMessageID(time.Now(), "alerts@example.org"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

type logs struct{ bytes.Buffer }

func transport(t *testing.T, port int, o SMTPOptions) (*SMTPTransport, *logs) {
	t.Helper()
	var l logs
	o.Host, o.Port = "127.0.0.1", port
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	tr := NewSMTPTransport(o, slog.New(slog.NewTextHandler(&l, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { _ = tr.Close() })
	return tr, &l
}

func trusted(s *smtptest.Server) *tls.Config {
	return &tls.Config{RootCAs: s.CertPool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

func send(t *testing.T, tr *SMTPTransport, to ...string) (Outcome, error) {
	t.Helper()
	if len(to) == 0 {
		to = []string{"ops@example.org"}
	}
	return tr.Send(context.Background(), Envelope{From: "alerts@example.org", To: to}, message(t, "Temperatura alta en el salón: 31 °C"))
}

func asMailerError(t *testing.T, err error) *Error {
	t.Helper()
	var me *Error
	if !errors.As(err, &me) {
		t.Fatalf("error %v (%T) is not a *mailer.Error", err, err)
	}
	return me
}

func TestStartTLSAuthPlainDeliversIntactSubject(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: users})
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityStartTLS, Username: "alerts@example.org", Password: password, TLSConfig: trusted(srv)})
	out, err := send(t, tr)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.Accepted, []string{"ops@example.org"}) {
		t.Errorf("accepted %v", out.Accepted)
	}
	m := srv.WaitMessages(t, 1, 5*time.Second)[0]
	if m.Subject != "Temperatura alta en el salón: 31 °C" || !strings.Contains(m.Body, "está a 31 °C") {
		t.Errorf("subject %q body %q", m.Subject, m.Body)
	}
	if m.AuthUser != "alerts@example.org" || !slices.Contains(srv.Commands(), "AUTH PLAIN alerts@example.org") {
		t.Errorf("auth user %q, commands %v: want AUTH PLAIN", m.AuthUser, srv.Commands())
	}
}

func TestAuthLoginAnyPrompts(t *testing.T) {
	for _, prompts := range [][2]string{
		{"Username:", "Password:"},
		{"User Name\x00", "Password\x00"},
		{"username:", "password:"},
	} {
		srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.ImplicitTLS, Users: users, Mechanisms: []string{"LOGIN"}, LoginPrompts: prompts})
		tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityTLS, Auth: "login", Username: "alerts@example.org", Password: password, TLSConfig: trusted(srv)})
		if _, err := send(t, tr); err != nil {
			t.Errorf("prompts %q: %v", prompts, err)
			continue
		}
		if !slices.Contains(srv.Commands(), "AUTH LOGIN alerts@example.org") {
			t.Errorf("prompts %q: commands %v", prompts, srv.Commands())
		}
	}
}

func TestAutoPicksLoginWhenPlainIsNotOffered(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: users, Mechanisms: []string{"LOGIN"}})
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityStartTLS, Username: "alerts@example.org", Password: password, TLSConfig: trusted(srv)})
	if _, err := send(t, tr); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(srv.Commands(), "AUTH LOGIN alerts@example.org") {
		t.Errorf("commands %v, want AUTH LOGIN", srv.Commands())
	}
}

func TestMechanismNotOffered(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: users, Mechanisms: []string{"LOGIN"}})
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityStartTLS, Auth: "plain", Username: "alerts@example.org", Password: password, TLSConfig: trusted(srv)})
	_, err := send(t, tr)
	me := asMailerError(t, err)
	if me.Kind != KindConfig || !strings.Contains(me.Error(), "offers AUTH LOGIN but not PLAIN") {
		t.Errorf("got %v (kind %s)", me, me.Kind)
	}
}

func TestWrongPasswordSaysSoAndNeverShowsIt(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{"alerts@example.org": "other"}})
	tr, logs := transport(t, srv.Port, SMTPOptions{Security: SecurityStartTLS, Username: "alerts@example.org", Password: password, TLSConfig: trusted(srv)})
	_, err := send(t, tr)
	me := asMailerError(t, err)
	if me.Kind != KindAuth || me.Code != 535 || !me.Retryable() || !strings.Contains(me.Error(), "app password") {
		t.Errorf("got %v (kind %s, code %d)", me, me.Kind, me.Code)
	}
	if strings.Contains(me.Error(), password) || strings.Contains(logs.String(), password) {
		t.Errorf("the password leaked: %q / %q", me.Error(), logs.String())
	}
}

func TestClassicSecurityMistakes(t *testing.T) {
	t.Run("implicit TLS on a STARTTLS port", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS})
		tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityTLS, TLSConfig: trusted(srv)})
		me := asMailerError(t, func() error { _, err := send(t, tr); return err }())
		if me.Kind != KindConfig || !strings.Contains(me.Error(), "expects security: starttls") {
			t.Errorf("got %v", me)
		}
	})
	t.Run("STARTTLS on an implicit TLS port", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.ImplicitTLS})
		tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityStartTLS, TLSConfig: trusted(srv), Timeout: 500 * time.Millisecond})
		me := asMailerError(t, func() error { _, err := send(t, tr); return err }())
		if !me.Retryable() || !strings.Contains(me.Error(), "security: tls") {
			t.Errorf("got %v", me)
		}
	})
	t.Run("STARTTLS not offered", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.NoTLS})
		tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityStartTLS})
		me := asMailerError(t, func() error { _, err := send(t, tr); return err }())
		if me.Kind != KindConfig || !strings.Contains(me.Error(), "does not offer STARTTLS") {
			t.Errorf("got %v", me)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS})
		tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityStartTLS})
		me := asMailerError(t, func() error { _, err := send(t, tr); return err }())
		if me.Kind != KindConfig || !strings.Contains(me.Error(), "ca_file") {
			t.Errorf("got %v", me)
		}
	})
	t.Run("password over plaintext", func(t *testing.T) {
		srv := smtptest.Start(t, smtptest.Options{Users: users, AllowInsecureAuth: true})
		tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone, Username: "alerts@example.org", Password: password})
		me := asMailerError(t, func() error { _, err := send(t, tr); return err }())
		if me.Kind != KindConfig || !strings.Contains(me.Error(), "without TLS") {
			t.Errorf("got %v", me)
		}
		for _, c := range srv.Commands() {
			if strings.HasPrefix(c, "AUTH") {
				t.Errorf("credentials were sent over plaintext: %v", srv.Commands())
			}
		}
	})
}

func TestPerRecipientOutcome(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.FailRcpt("gone@example.org", -1, 550, [3]int{5, 1, 1}, "no such user")
	srv.FailRcpt("full@example.org", -1, 452, [3]int{4, 2, 2}, "mailbox full")
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone})
	out, err := send(t, tr, "gone@example.org", "ops@example.org", "full@example.org")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.Accepted, []string{"ops@example.org"}) || len(out.Rejected) != 2 {
		t.Fatalf("outcome %+v", out)
	}
	if r := out.Rejected[0]; r.Rcpt != "gone@example.org" || r.Err.Retryable() || r.Err.ServerText != "no such user" {
		t.Errorf("550 recipient: %+v %v", r, r.Err)
	}
	if r := out.Rejected[1]; r.Rcpt != "full@example.org" || !r.Err.Retryable() {
		t.Errorf("452 recipient: %+v %v", r, r.Err)
	}
	if m := srv.WaitMessages(t, 1, 5*time.Second)[0]; !slices.Equal(m.To, []string{"ops@example.org"}) {
		t.Errorf("delivered to %v", m.To)
	}
}

func TestSessionReuseAndRedialAfter421(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone})
	for range 3 {
		if _, err := send(t, tr); err != nil {
			t.Fatal(err)
		}
	}
	if srv.Conns() != 1 {
		t.Errorf("%d sessions for 3 mails in a row, want 1", srv.Conns())
	}
	srv.Fail("MAIL", 1, 421, [3]int{4, 3, 2}, "closing, try later")
	_, err := send(t, tr)
	if me := asMailerError(t, err); !me.Retryable() || me.Code != 421 {
		t.Fatalf("421: %v", me)
	}
	if _, err := send(t, tr); err != nil {
		t.Fatal(err)
	}
	if srv.Conns() != 2 {
		t.Errorf("%d sessions, want a redial after 421", srv.Conns())
	}
	if n := len(srv.Messages()); n != 4 {
		t.Errorf("%d mails delivered, want 4", n)
	}
}

func TestDataReplies(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone})
	srv.Fail("DATA", 1, 451, [3]int{4, 3, 0}, "queue full")
	me := asMailerError(t, func() error { _, err := send(t, tr); return err }())
	if me.Kind != KindTemporary || !me.Retryable() {
		t.Errorf("451: %v (%s)", me, me.Kind)
	}
	srv.Fail("DATA", 1, 554, [3]int{5, 7, 1}, "message refused as spam")
	me = asMailerError(t, func() error { _, err := send(t, tr); return err }())
	if me.Kind != KindPermanent || me.ServerText != "message refused as spam" || !strings.Contains(me.Error(), "554 5.7.1") {
		t.Errorf("554: %v (%s)", me, me.Kind)
	}
	if _, err := send(t, tr); err != nil {
		t.Errorf("the session must still work after refused messages: %v", err)
	}
}

// The strict peer refuses a nested MAIL: without RSET after a transaction
// that failed, the next mail on the session would be refused.
func TestStrictPeerResetAfterRefusedTransaction(t *testing.T) {
	srv := smtptest.StartStrict(t, smtptest.StrictOptions{User: "alerts@example.org", Password: password})
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone, AllowInsecureAuth: true, Auth: "login",
		Username: "alerts@example.org", Password: password})
	out, err := send(t, tr, "reject-me@example.org")
	if err != nil || len(out.Accepted) != 0 || len(out.Rejected) != 1 || out.Rejected[0].Err.Code != 550 {
		t.Fatalf("all recipients refused: %+v, %v", out, err)
	}
	out, err = send(t, tr, "later@example.org", "ops@example.org")
	if err != nil {
		t.Fatalf("second mail on the same session: %v", err)
	}
	if !slices.Equal(out.Accepted, []string{"ops@example.org"}) || !out.Rejected[0].Err.Retryable() {
		t.Errorf("outcome %+v", out)
	}
	m := srv.WaitMessages(t, 1, 5*time.Second)[0]
	if m.Subject != "Temperatura alta en el salón: 31 °C" || !slices.Equal(m.To, []string{"ops@example.org"}) {
		t.Errorf("strict peer got %q to %v", m.Subject, m.To)
	}
}
