package mailer

import (
	"context"
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/alertd/alertd/internal/smtptest"
)

// secrets are every form in which the password could leak into a
// transcript: as typed, and base64-encoded as PLAIN and LOGIN send it.
func secrets() []string {
	b64 := base64.StdEncoding.EncodeToString
	return []string{password, b64([]byte(password)), b64([]byte("\x00" + user + "\x00" + password)), b64([]byte(user))}
}

// TestTranscriptRedactsEveryAuthPayload: whatever the security and the
// mechanism, the transcript shows the whole session in order, C: and S:
// lines, the TLS in use, and no form of the credentials.
func TestTranscriptRedactsEveryAuthPayload(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tls      smtptest.TLSMode
		security Security
		mech     string
		want     []string // lines, in this order
	}{
		{"starttls plain", smtptest.StartTLS, SecurityStartTLS, sasl.Plain, []string{
			"S: 220 ", "C: EHLO localhost", "C: STARTTLS", "S: 220 ",
			"TLS: TLS 1.3, certificate verified: subject CN=smtptest",
			"C: EHLO alertd.test", "C: AUTH PLAIN " + Redacted, "S: 235 ",
			"C: MAIL FROM:<" + user + ">", "S: 250 ", "C: RCPT TO:<ops@example.org>", "C: DATA", "S: 354 ",
			"C: Subject: =?utf-8?q?", "C: .", "S: 250 ", "C: QUIT", "S: 221 ",
		}},
		{"starttls login", smtptest.StartTLS, SecurityStartTLS, sasl.Login, []string{
			"C: STARTTLS", "TLS: TLS 1.3", "C: AUTH LOGIN", "S: 334 ", "C: " + Redacted, "S: 334 ", "C: " + Redacted, "S: 235 ", "C: MAIL FROM:",
		}},
		{"implicit tls", smtptest.ImplicitTLS, SecurityTLS, sasl.Plain, []string{
			"TLS: TLS 1.3, certificate verified", "S: 220 ", "C: EHLO alertd.test", "C: AUTH PLAIN " + Redacted, "S: 235 ", "C: QUIT",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := smtptest.Start(t, smtptest.Options{TLS: tc.tls, Users: users, Mechanisms: []string{tc.mech}})
			var out syncBuffer
			tr, _ := transport(t, srv.Port, login(srv, SMTPOptions{Security: tc.security, Transcript: &out}))
			if _, err := send(t, tr); err != nil {
				t.Fatal(err)
			}
			_ = tr.Close()
			got := out.String()
			assertInOrder(t, got, tc.want)
			for _, s := range secrets() {
				if strings.Contains(got, s) {
					t.Errorf("the transcript shows %q:\n%s", s, got)
				}
			}
			for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
				if !strings.HasPrefix(l, "C:") && !strings.HasPrefix(l, "S: ") && !strings.HasPrefix(l, "TLS: ") {
					t.Errorf("line %q is neither C:, S: nor TLS:", l)
				}
			}
		})
	}
}

// TestTranscriptWrongPasswordShowsTheRefusal: the 535 is in the
// transcript as the server sent it; the password is not.
func TestTranscriptWrongPasswordShowsTheRefusal(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{user: "the-real-one"}})
	var out syncBuffer
	tr, _ := transport(t, srv.Port, login(srv, SMTPOptions{Security: SecurityStartTLS, Transcript: &out}))
	if _, err := send(t, tr); err == nil {
		t.Fatal("send succeeded with a wrong password")
	}
	assertInOrder(t, out.String(), []string{"C: AUTH PLAIN " + Redacted, "S: 535 5.7.8 "})
	if strings.Contains(out.String(), password) || strings.Contains(out.String(), "MAIL FROM") {
		t.Errorf("transcript:\n%s", out.String())
	}
}

// TestTranscriptTellsTheSidesApartInsideTheMessage: after STARTTLS the
// sides are told apart by the protocol; message lines that look like
// replies are still alertd's.
func TestTranscriptTellsTheSidesApartInsideTheMessage(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS})
	var out syncBuffer
	tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityStartTLS, TLSConfig: trusted(srv), Transcript: &out})
	now := time.Now()
	msg, err := Compose(Mail{From: user, To: []string{"ops@example.org"}, Subject: "s", Body: "250 looks like a reply\n334 so does this\n",
		Date: now, MessageID: NewMessageID(now, user)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Send(context.Background(), Envelope{From: user, To: []string{"ops@example.org"}}, msg); err != nil {
		t.Fatal(err)
	}
	assertInOrder(t, out.String(), []string{"S: 354 ", "C: 250 looks like a reply", "C: 334 so does this", "C: .", "S: 250 "})
}

// TestProbeSendsNoMail: a probe logs in and quits; the server sees no MAIL.
func TestProbeSendsNoMail(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: users})
	tr, _ := transport(t, srv.Port, login(srv, SMTPOptions{Security: SecurityStartTLS}))
	p, err := tr.Probe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s := p.String(); !strings.Contains(s, "STARTTLS: TLS 1.3, certificate verified") || !strings.Contains(s, "logged in as "+user) {
		t.Errorf("probe says %q", s)
	}
	waitFor(t, func() bool { return count(srv.Commands(), "LOGOUT") == 1 })
	if count(srv.Commands(), "AUTH PLAIN "+user) != 1 || count(srv.Commands(), "MAIL") != 0 {
		t.Errorf("commands %q, want one AUTH and no MAIL", srv.Commands())
	}
}

func TestProbeRefusedConnectionSaysWhatToCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	tr, _ := transport(t, port, SMTPOptions{Security: SecurityStartTLS})
	_, err = tr.Probe(context.Background())
	me, ok := err.(*Error)
	if !ok || me.Step != "connect" || !strings.Contains(me.Hint, "nothing listens on port") {
		t.Errorf("got %v", err)
	}
}

func assertInOrder(t *testing.T, got string, want []string) {
	t.Helper()
	rest := got
	for _, w := range want {
		i := strings.Index(rest, "\n"+w)
		if strings.HasPrefix(rest, w) {
			i = -1
			rest = rest[len(w):]
			continue
		}
		if i < 0 {
			t.Fatalf("transcript lacks %q (in order) in:\n%s", w, got)
		}
		rest = rest[i+1+len(w):]
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
