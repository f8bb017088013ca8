package smtptest_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/alertd/alertd/internal/smtptest"
)

const mail = "From: a@example.org\r\nTo: b@example.org\r\nSubject: =?utf-8?q?sal=C3=B3n?=\r\n\r\nhola\r\n"

// trustCAFile builds the client's trust from the PEM file, as alertd's
// smtp.tls.ca_file does.
func trustCAFile(t *testing.T, s *smtptest.Server) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("CAFile %s holds no certificate", s.CAFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func sendData(t *testing.T, c *smtp.Client) error {
	t.Helper()
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if _, err := w.Write([]byte(mail)); err != nil {
		t.Fatal(err)
	}
	return w.Close()
}

func TestServerRecordsTheConversation(t *testing.T) {
	s := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{"u@example.org": "pw"}})
	c, err := smtp.DialStartTLS(s.Addr, trustCAFile(t, s))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@example.org", nil); smtpCode(err) != 530 {
		t.Fatalf("MAIL before AUTH: %v, want 530", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "u@example.org", "pw")); err != nil {
		t.Fatal(err)
	}
	s.FailRcpt("gone@example.org", 1, 550, [3]int{5, 1, 1}, "no such user")
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("gone@example.org", nil); smtpCode(err) != 550 {
		t.Fatalf("scripted RCPT: %v", err)
	}
	if err := c.Rcpt("b@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := sendData(t, c); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"EHLO localhost", "STARTTLS", "EHLO client.example",
		"MAIL <a@example.org>", "AUTH PLAIN u@example.org",
		"MAIL <a@example.org>", "RCPT <gone@example.org>", "RCPT <b@example.org>", "DATA", "RSET",
	}
	if got := s.Commands(); !slices.Equal(got, want) {
		t.Errorf("commands\n got %q\nwant %q", got, want)
	}
	if s.Conns() != 1 {
		t.Errorf("Conns() = %d for one connection upgraded by STARTTLS", s.Conns())
	}
	m := s.WaitMessages(t, 1, time.Second)[0]
	if m.Subject != "salón" || m.Body != "hola\r\n" || m.AuthUser != "u@example.org" ||
		m.From != "a@example.org" || !slices.Equal(m.To, []string{"b@example.org"}) || m.Header.Get("To") != "b@example.org" {
		t.Errorf("message %+v", m)
	}
}

func TestServerScriptsRunOut(t *testing.T) {
	s := smtptest.Start(t, smtptest.Options{})
	s.Fail("DATA", 2, 451, [3]int{4, 3, 0}, "try later")
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, want := range []int{451, 451, 0} {
		if err := c.Mail("a@example.org", nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("b@example.org", nil); err != nil {
			t.Fatal(err)
		}
		if got := smtpCode(sendData(t, c)); got != want {
			t.Errorf("attempt %d: DATA answered %d, want %d (0 = 250)", i+1, got, want)
		}
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("%d mails accepted, want 1", n)
	}
}

func TestServerLoginPromptsAndMechanisms(t *testing.T) {
	s := smtptest.Start(t, smtptest.Options{TLS: smtptest.ImplicitTLS, Users: map[string]string{"u": "pw"},
		Mechanisms: []string{"LOGIN"}, LoginPrompts: [2]string{"User Name\x00", "Password\x00"}})
	c, err := smtp.DialTLS(s.Addr, &tls.Config{RootCAs: s.CertPool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.SupportsAuth("PLAIN") || !c.SupportsAuth("LOGIN") {
		t.Error("only LOGIN must be offered")
	}
	if err := c.Auth(sasl.NewPlainClient("", "u", "pw")); smtpCode(err) != 504 {
		t.Errorf("AUTH PLAIN when not offered: %v, want 504", err)
	}
	// go-sasl's LOGIN client insists on the prompt "Password:": this server
	// really sends the configured one.
	err = c.Auth(sasl.NewLoginClient("u", "pw"))
	if !errors.Is(err, sasl.ErrUnexpectedServerChallenge) {
		t.Errorf("go-sasl LOGIN against prompt %q: %v", "Password\x00", err)
	}
}

func TestServerDown(t *testing.T) {
	s := smtptest.Start(t, smtptest.Options{})
	s.SetDown(true)
	if c, err := smtp.Dial(s.Addr); err == nil {
		err = c.Hello("x")
		c.Close()
		if err == nil {
			t.Fatal("a server that is down answered EHLO")
		}
	}
	s.SetDown(false)
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("x"); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	if s.Conns() != 1 {
		t.Errorf("Conns() = %d: connections refused during the outage must not count", s.Conns())
	}
}

// The reason the strict peer exists: aiosmtpd refuses a second MAIL in an
// open transaction (RFC 5321 §4.1.4), go-smtp's server lets it through.
func TestNestedMail(t *testing.T) {
	strict := smtptest.StartStrict(t, smtptest.StrictOptions{User: "u@example.org", Password: "pw"})
	lenient := smtptest.Start(t, smtptest.Options{})
	for _, tc := range []struct {
		name, addr string
		auth       bool
		nested     int
	}{
		{"aiosmtpd", strict.Addr, true, 503},
		{"go-smtp", lenient.Addr, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := smtp.Dial(tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc.auth {
				if err := c.Mail("a@example.org", nil); smtpCode(err) != 530 {
					t.Errorf("MAIL before AUTH: %v, want 530", err)
				}
				if err := c.Auth(sasl.NewPlainClient("", "u@example.org", "pw")); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Mail("a@example.org", nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Rcpt("reject-me@example.org", nil); tc.auth && smtpCode(err) != 550 {
				t.Errorf("RCPT reject-me: %v, want 550", err)
			}
			if err := c.Mail("a@example.org", nil); smtpCode(err) != tc.nested {
				t.Errorf("nested MAIL: %v, want code %d (0 = accepted)", err, tc.nested)
			}
		})
	}
}

func TestStrictSavesMail(t *testing.T) {
	s := smtptest.StartStrict(t, smtptest.StrictOptions{})
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	for _, rcpt := range []string{"later@example.org", "b@example.org"} {
		err := c.Rcpt(rcpt, nil)
		if strings.HasPrefix(rcpt, "later") != (smtpCode(err) == 450) {
			t.Errorf("RCPT %s: %v", rcpt, err)
		}
	}
	if err := sendData(t, c); err != nil {
		t.Fatal(err)
	}
	m := s.WaitMessages(t, 1, 5*time.Second)[0]
	if m.Subject != "salón" || m.From != "a@example.org" || !slices.Equal(m.To, []string{"b@example.org"}) {
		t.Errorf("saved %+v", m)
	}
}

func TestStrictRefusesRepeatedEHLO(t *testing.T) {
	s := smtptest.StartStrict(t, smtptest.StrictOptions{RefuseRepeatedEHLO: true})
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	// go-smtp's client says EHLO again with the first command after RSET.
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop(); smtpCode(err) != 503 {
		t.Errorf("second EHLO: %v, want 503", err)
	}
}

// waitHeld polls until n mails are held in DATA.
func waitHeld(t *testing.T, s *smtptest.Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Held()) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d mails held, want %d; commands %q", len(s.Held()), n, s.Commands())
		}
		time.Sleep(5 * time.Millisecond) // polling, not timing: nothing signals a held DATA
	}
}

// transaction sends one mail on its own connection, in the background;
// the channel gets the reply to the final dot.
func transaction(t *testing.T, s *smtptest.Server) (*smtp.Client, <-chan error) {
	t.Helper()
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@example.org", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(mail)); err != nil {
		t.Fatal(err)
	}
	reply := make(chan error, 1)
	go func() { reply <- w.Close() }()
	return c, reply
}

func TestHoldData(t *testing.T) {
	t.Run("release accepts", func(t *testing.T) {
		s := smtptest.Start(t, smtptest.Options{})
		release := s.HoldData(t)
		_, reply := transaction(t, s)
		waitHeld(t, s, 1)
		if held := s.Held()[0]; held.Subject != "salón" || len(s.Messages()) != 0 {
			t.Fatalf("held %+v, accepted %d", held, len(s.Messages()))
		}
		release(nil)
		if err := <-reply; err != nil {
			t.Fatalf("released with nil: %v", err)
		}
		if len(s.Messages()) != 1 || len(s.Held()) != 0 {
			t.Errorf("after release: %d accepted, %d held", len(s.Messages()), len(s.Held()))
		}
		// The hold is over.
		if _, reply := transaction(t, s); <-reply != nil {
			t.Error("DATA after the release was not answered 250")
		}
	})
	t.Run("release with an error", func(t *testing.T) {
		s := smtptest.Start(t, smtptest.Options{})
		release := s.HoldData(t)
		_, reply := transaction(t, s)
		waitHeld(t, s, 1)
		release(&smtp.SMTPError{Code: 451, Message: "late"})
		release(nil) // too late: the first release decided
		if err := <-reply; smtpCode(err) != 451 {
			t.Errorf("reply %v, want 451", err)
		}
		if n := len(s.Messages()); n != 0 {
			t.Errorf("%d mails accepted", n)
		}
	})
	t.Run("client gone before the release", func(t *testing.T) {
		s := smtptest.Start(t, smtptest.Options{})
		release := s.HoldData(t)
		c, reply := transaction(t, s)
		waitHeld(t, s, 1)
		_ = c.Close() // the client crashed after the dot
		<-reply
		release(nil)
		if m := s.WaitMessages(t, 1, 5*time.Second)[0]; m.Subject != "salón" {
			t.Errorf("accepted %+v", m)
		}
	})
}

func TestDataDelay(t *testing.T) {
	s := smtptest.Start(t, smtptest.Options{})
	s.SetDataDelay(100 * time.Millisecond)
	start := time.Now()
	if _, reply := transaction(t, s); <-reply != nil {
		t.Fatal("delayed DATA failed")
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("answered after %s, want at least the 100ms delay", took)
	}
}
