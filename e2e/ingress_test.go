package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/smtptest"
)

// A device's mail that heard 250 survives a kill -9: the upstream server
// was down, alertd is killed, and after the restart the mail is relayed,
// once. The 250 came only after the commit.
func TestDeviceMailSurvivesKill9After250(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDown(true)
	smtpIn := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	s := newSetup(t, mailConfig(broker.URL(), srv.Port, fmt.Sprintf(`ingress:
  relay_to: [ops@example.org]
  smtp: {listen: %q, hostname: alertd.test}
`, smtpIn)))
	p := s.start()
	host, port, _ := net.SplitHostPort(smtpIn)
	out, err := exec.Command("swaks", "--server", host, "--port", port, "--from", "cellar@casa.lan",
		"--to", "ops@example.org", "--header", "Subject: Cellar flooded", "--body", "Water!", "--timeout", "10").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	p.kill()

	srv.SetDown(false)
	s.start()
	msgs := srv.WaitMessages(t, 1, 15*time.Second)
	time.Sleep(500 * time.Millisecond) // a second copy would arrive here
	if msgs = srv.Messages(); len(msgs) != 1 || msgs[0].Subject != "Cellar flooded" {
		t.Fatalf("%d mails after the restart, want the device's mail once", len(msgs))
	}
}

// bySubject finds the one mail with subject; it fails the test when there
// is none or more than one.
func bySubject(t *testing.T, msgs []smtptest.Message, subject string) smtptest.Message {
	t.Helper()
	var found []smtptest.Message
	for _, m := range msgs {
		if m.Subject == subject {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d upstream copies of %q, want exactly 1 (all subjects: %q)", len(found), subject, subjects(msgs))
	}
	return found[0]
}

func subjects(msgs []smtptest.Message) []string {
	var s []string
	for _, m := range msgs {
		s = append(s, m.Subject)
	}
	return s
}

// The upstream server is down while a device mails through the SMTP
// ingress (swaks) and another posts /v1/mail: both hear success, both
// mails wait in the outbox through failed attempts, and when the server
// is back each arrives exactly once, with its subject and text, sent as
// smtp.from (the only sender Gmail or Office 365 would take).
func TestDeviceMailWaitsOutAnUpstreamOutage(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDown(true)
	yaml, in := ingressYAML(t, "")
	s := newSetup(t, mailConfig(broker.URL(), srv.Port, yaml))
	p := s.start()

	host, port, _ := net.SplitHostPort(in.smtp)
	out, err := exec.Command("swaks", "--server", host, "--port", port, "--from", "cellar@casa.lan",
		"--to", "ops@example.org", "--header", "Subject: Cellar flooded", "--body", "Water at 12 cm",
		"--timeout", "10").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "<-  250 2.0.0 OK: queued as") {
		t.Fatalf("swaks: %v, want 250 queued as …:\n%s", err, out)
	}
	if a := postMail(t, in, "127.0.0.1", "Pump stopped", "Pressure 0.0 bar"); a.Status != 202 || a.ID == "" || a.Duplicate {
		t.Fatalf("POST /v1/mail: %+v, want 202 with an id", a)
	}
	// The mailer keeps the order: the first mail is tried again and again,
	// the second waits behind it.
	waitFor(t, 15*time.Second, "both mails queued, the first tried against the down server", func() bool {
		l := p.outbox(t)
		return len(l.Pending) >= 2 && (l.Pending[0].Attempts >= 2 || l.Pending[1].Attempts >= 2)
	})
	if l := p.outbox(t); len(l.Pending) != 2 {
		t.Fatalf("%d mails queued, want the 2 the devices sent", len(l.Pending))
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("%d mails reached a server that was down", n)
	}

	srv.SetDown(false)
	srv.WaitMessages(t, 2, 15*time.Second)
	settle()
	msgs := srv.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d mails after the outage, want 2 (%q)", len(msgs), subjects(msgs))
	}
	for _, want := range []struct{ subject, body string }{
		{"Cellar flooded", "Water at 12 cm"},
		{"Pump stopped", "Pressure 0.0 bar"},
	} {
		m := bySubject(t, msgs, want.subject)
		if got := strings.TrimSpace(m.Body); got != want.body {
			t.Errorf("%q: body %q, want %q", want.subject, got, want.body)
		}
		if m.From != "alertd@example.org" {
			t.Errorf("%q: envelope sender %q, want smtp.from alertd@example.org", want.subject, m.From)
		}
		if !slices.Equal(m.To, []string{"ops@example.org"}) {
			t.Errorf("%q: envelope recipients %q, want [ops@example.org]", want.subject, m.To)
		}
	}
	if got := bySubject(t, msgs, "Cellar flooded").Header.Get("Reply-To"); !strings.Contains(got, "cellar@casa.lan") {
		t.Errorf("relayed mail's Reply-To %q, want the device's From cellar@casa.lan", got)
	}
	waitFor(t, 5*time.Second, "the outbox drained", func() bool { return len(p.outbox(t).Pending) == 0 })
}

// The ingress relay's dedupe and rate limit are kept in the store, so a
// restart (kill -9, then SIGTERM) forgets neither: the same mail sent
// again after it is still held back — the device hears success and the
// upstream account gets no second copy — and a client that used up
// ingress.rate_limit is still refused, over SMTP with 450 4.7.1 and over
// HTTP with 429 and a Retry-After counted from its first mail (one window
// per client address, whichever listener it uses). A client that sent
// nothing yet is served meanwhile.
func TestIngressDedupeAndRateLimitSurviveRestarts(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	yaml, in := ingressYAML(t, "  cooldown: 10m\n  rate_limit: 2/h\n")
	s := newSetup(t, mailConfig(broker.URL(), srv.Port, yaml))
	p := s.start()

	// One client address for each thing held.
	const (
		smtpDup  = "127.0.0.2" // sends the same mail again
		smtpRate = "127.0.0.3" // sends more mails than the rate limit allows
		httpDup  = "127.0.0.4"
		httpRate = "127.0.0.5"
	)
	wantQueued(t, "first mail", pythonMail(t, in, smtpDup, "cellar@casa.lan", "Cellar flooded", "Water!"))
	wantQueued(t, "rate 1", pythonMail(t, in, smtpRate, "shed@casa.lan", "Shed door 1", "open"))
	wantQueued(t, "rate 2", pythonMail(t, in, smtpRate, "shed@casa.lan", "Shed door 2", "open"))
	wantRateLimited(t, "rate 3, before any restart", pythonMail(t, in, smtpRate, "shed@casa.lan", "Shed door 3", "open"))
	// One window per client address, whichever listener it uses.
	if a := postMail(t, in, smtpRate, "Shed door 3", "open"); a.Status != 429 {
		t.Fatalf("POST /v1/mail from the client rate-limited over SMTP: %+v, want 429", a)
	}
	if a := postMail(t, in, httpDup, "Pump stopped", "Pressure 0.0 bar"); a.Status != 202 || a.Duplicate {
		t.Fatalf("first POST /v1/mail: %+v, want 202, not a duplicate", a)
	}
	for i := 1; i <= 2; i++ {
		if a := postMail(t, in, httpRate, fmt.Sprintf("Gate %d", i), "open"); a.Status != 202 {
			t.Fatalf("POST /v1/mail %d: %+v, want 202", i, a)
		}
	}
	if a := postMail(t, in, httpRate, "Gate 3", "open"); a.Status != 429 {
		t.Fatalf("POST /v1/mail 3, before any restart: %+v, want 429", a)
	}
	srv.WaitMessages(t, 6, 15*time.Second)
	settle()
	if n := len(srv.Messages()); n != 6 {
		t.Fatalf("%d mails upstream before the restart, want the 6 admitted (%q)", n, subjects(srv.Messages()))
	}

	delivered := 6
	for i, restart := range []struct {
		name string
		stop func()
	}{
		{"kill -9", func() { p.kill() }},
		{"SIGTERM", func() {
			if _, code := p.term(t); code != 0 {
				t.Fatalf("SIGTERM: exit %d, want 0", code)
			}
		}},
	} {
		restart.stop()
		p = s.start()
		after := "after " + restart.name

		wantHeldBack(t, "the same mail "+after, pythonMail(t, in, smtpDup, "cellar@casa.lan", "Cellar flooded", "Water!"))
		wantRateLimited(t, "a rate-limited client "+after, pythonMail(t, in, smtpRate, "shed@casa.lan", fmt.Sprintf("Shed door %d", 4+i), "open"))
		if a := postMail(t, in, httpDup, "Pump stopped", "Pressure 0.0 bar"); a.Status != 202 || !a.Duplicate {
			t.Errorf("the same POST /v1/mail %s: %+v, want 202 with duplicate: true", after, a)
		}
		a := postMail(t, in, httpRate, fmt.Sprintf("Gate %d", 4+i), "open")
		retry, _ := strconv.Atoi(a.RetryAfter)
		// The window reopens an hour after the client's first mail, not an
		// hour after the restart, and not at once.
		if a.Status != 429 || retry < 3000 || retry > 3600 {
			t.Errorf("a rate-limited POST /v1/mail %s: status %d, Retry-After %q; want 429 with the rest of the hour", after, a.Status, a.RetryAfter)
		}
		// A new client is served: the listeners work, the refusals above
		// are the state's.
		fresh := fmt.Sprintf("127.0.0.%d", 10+i)
		wantQueued(t, "a new client "+after, pythonMail(t, in, fresh, "attic@casa.lan", "Attic "+restart.name, "hot"))
		delivered++

		srv.WaitMessages(t, delivered, 15*time.Second)
		settle()
		msgs := srv.Messages()
		if len(msgs) != delivered {
			t.Fatalf("%s: %d mails upstream, want %d: nothing held back may be sent (%q)", after, len(msgs), delivered, subjects(msgs))
		}
		bySubject(t, msgs, "Cellar flooded")
		bySubject(t, msgs, "Pump stopped")
		m := p.metrics(t)
		if m[`alertd_notifications_suppressed_total{reason="cooldown",rule="ingress"}`] < 2 {
			t.Errorf("%s: alertd_notifications_suppressed_total{rule=ingress,reason=cooldown} = %v, want the 2 duplicates counted", after,
				m[`alertd_notifications_suppressed_total{reason="cooldown",rule="ingress"}`])
		}
		if m[`alertd_ingress_smtp_total{result="rate_limited"}`] < 1 || m[`alertd_ingress_http_total{result="rate_limited"}`] < 1 {
			t.Errorf("%s: rate-limited requests not counted: smtp %v, http %v", after,
				m[`alertd_ingress_smtp_total{result="rate_limited"}`], m[`alertd_ingress_http_total{result="rate_limited"}`])
		}
	}
}
