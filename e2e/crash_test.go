package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/smtptest"
)

// mailConfig: a real broker, a plain local SMTP server, fast retries, and
// a rule that mails each breaching topic once.
func mailConfig(broker string, smtpPort int, extra string) string {
	return fmt.Sprintf(`mqtt:
  broker: %s
  client_id: alertd-e2e-%d
smtp:
  host: 127.0.0.1
  port: %d
  security: none
  from: "alertd <alertd@example.org>"
  timeout: 2s
  retry: {initial: 100ms, max: 300ms, give_up_after: 1h}
%sdefaults: {to: [ops@example.org], cooldown: 0s, rate_limit: 10000/h}
rules:
  - {name: hot, topic: "s/+/t", field: temp, above: 30, subject: "hot {{.Device}}"}
`, broker, time.Now().UnixNano(), smtpPort, extra)
}

func messageIDs(msgs []smtptest.Message) map[string]int {
	ids := map[string]int{}
	for _, m := range msgs {
		ids[m.Header.Get("Message-Id")]++
	}
	return ids
}

// Killed while the SMTP server is down: the queued alert survives in the
// outbox and is delivered, once, after the restart.
func TestKill9WhileSMTPIsDown(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDown(true)
	s := newSetup(t, mailConfig(broker.URL(), srv.Port, ""))
	p := s.start()
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "s/a/t", `{"temp": 31}`)
	waitFor(t, 15*time.Second, "the alert queued and attempted", func() bool {
		l := p.outbox(t)
		return len(l.Pending) == 1 && l.Pending[0].Attempts >= 1
	})
	// A stuck queue shows at a glance.
	waitFor(t, 10*time.Second, "queue metrics", func() bool {
		m := p.metrics(t)
		return m["alertd_mail_queue_depth"] == 1 && m["alertd_mail_oldest_pending_seconds"] > 0 &&
			m[`alertd_mail_attempts_total{result="network"}`] >= 1
	})
	p.kill()

	srv.SetDown(false)
	s.start()
	srv.WaitMessages(t, 1, 15*time.Second)
	time.Sleep(500 * time.Millisecond) // a second copy would arrive here
	if msgs := srv.Messages(); len(msgs) != 1 || msgs[0].Subject != "hot a" {
		t.Fatalf("delivered %d mails, want the one alert once", len(msgs))
	}
}

// Killed after the server has the whole message but before it answered:
// the mail is sent again after the restart (at-least-once) with the same
// Message-ID, so the copy can be recognised.
func TestKill9MidDATAResendsWithTheSameMessageID(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	release := srv.HoldData(t)
	s := newSetup(t, mailConfig(broker.URL(), srv.Port, ""))
	p := s.start()
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "s/a/t", `{"temp": 31}`)
	waitFor(t, 15*time.Second, "the message inside DATA", func() bool { return len(srv.Held()) == 1 })
	p.kill()
	release(nil) // the server accepts what it received before the crash

	s.start()
	msgs := srv.WaitMessages(t, 2, 15*time.Second)
	ids := messageIDs(msgs)
	if len(ids) != 1 {
		t.Fatalf("the re-sent copy has another Message-ID: %v", ids)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(srv.Messages()); n != 2 {
		t.Errorf("%d copies, want 2 (the one in flight at the crash, and its resend)", n)
	}
}

// Killed while a backlog drains: every alert arrives, each copy at most
// twice (only the one in flight at the kill), in the order they were raised.
func TestKill9WhileBacklogDrains(t *testing.T) {
	const n = 30
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDown(true)
	s := newSetup(t, mailConfig(broker.URL(), srv.Port, ""))
	p := s.start()
	pub := mqtttest.NewPublisher(t, broker.URL())
	for i := range n {
		pub.Publish(t, fmt.Sprintf("s/d%02d/t", i), `{"temp": 31}`)
	}
	waitFor(t, 20*time.Second, "the backlog queued", func() bool { return len(p.outbox(t).Pending) == n })
	srv.SetDataDelay(40 * time.Millisecond)
	srv.SetDown(false)
	waitFor(t, 20*time.Second, "part of the backlog delivered", func() bool { return len(srv.Messages()) >= 5 })
	p.kill()
	srv.SetDataDelay(0)

	s.start()
	waitFor(t, 30*time.Second, "the whole backlog", func() bool { return len(messageIDs(srv.Messages())) == n })
	time.Sleep(300 * time.Millisecond)
	msgs := srv.Messages()
	dups := 0
	for _, c := range messageIDs(msgs) {
		if c > 2 {
			t.Errorf("a mail arrived %d times", c)
		}
		dups += c - 1
	}
	if dups > 1 {
		t.Errorf("%d duplicates; at most the one in flight at the kill may repeat", dups)
	}
}

// SIGTERM while the server stalls inside DATA: alertd exits 0 within 10 s,
// the mail stays queued, and it is delivered once after the restart.
func TestSIGTERMDuringStalledDATA(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	release := srv.HoldData(t)
	s := newSetup(t, mailConfig(broker.URL(), srv.Port, ""))
	p := s.start()
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "s/a/t", `{"temp": 31}`)
	waitFor(t, 15*time.Second, "the message inside DATA", func() bool { return len(srv.Held()) == 1 })
	took, code := p.term(t)
	if code != 0 || took > 10*time.Second {
		t.Fatalf("exit %d after %s, want 0 within 10s", code, took)
	}
	release(&smtp.SMTPError{Code: 451, Message: "connection lost"}) // the stalled one never completed

	s.start()
	srv.WaitMessages(t, 1, 15*time.Second)
	time.Sleep(500 * time.Millisecond)
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("%d copies, want 1", n)
	}
}

// A server that stops answering in DATA (a timeout), then one that drops
// the connection, then 421/451/452: the alerts arrive once each, in order.
func TestStallsAndTemporaryRepliesDeliverOnceInOrder(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	release := srv.HoldData(t)
	s := newSetup(t, mailConfig(broker.URL(), srv.Port, ""))
	s.start()
	pub := mqtttest.NewPublisher(t, broker.URL())
	pub.Publish(t, "s/first/t", `{"temp": 31}`)
	waitFor(t, 15*time.Second, "the stalled DATA", func() bool { return len(srv.Held()) == 1 })
	// alertd gives up on the stalled session after smtp.timeout (2s) and
	// retries; the stalled session then fails.
	srv.Fail("MAIL", 1, 421, [3]int{4, 3, 2}, "too busy")
	srv.Fail("RCPT", 1, 452, [3]int{4, 5, 3}, "too many recipients")
	srv.Fail("DATA", 1, 451, [3]int{4, 3, 0}, "local error")
	time.AfterFunc(2500*time.Millisecond, func() { release(&smtp.SMTPError{Code: 451, Message: "late"}) })
	pub.Publish(t, "s/second/t", `{"temp": 32}`)
	pub.Publish(t, "s/third/t", `{"temp": 33}`)

	srv.WaitMessages(t, 3, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive here
	msgs := srv.Messages()
	var subjects []string
	for _, m := range msgs {
		subjects = append(subjects, m.Subject)
	}
	if fmt.Sprint(subjects) != "[hot first hot second hot third]" {
		t.Errorf("delivered %q, want each alert once, in order", subjects)
	}
}

// The connection drops in the middle of the DATA exchange, before the
// server's reply, and the server discards the mail: alertd sends it again
// on a new connection, once.
func TestConnectionDroppedMidDATA(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	px := newProxy(t, srv.Addr)
	release := srv.HoldData(t)
	s := newSetup(t, mailConfig(broker.URL(), px.port(), ""))
	s.start()
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "s/a/t", `{"temp": 31}`)
	waitFor(t, 15*time.Second, "the message inside DATA", func() bool { return len(srv.Held()) == 1 })
	px.cut()
	// The server side of the dropped session gives up on it.
	release(&smtp.SMTPError{Code: 451, Message: "connection lost"})
	srv.WaitMessages(t, 1, 15*time.Second)
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive here
	if msgs := srv.Messages(); len(msgs) != 1 || msgs[0].Subject != "hot a" {
		t.Fatalf("delivered %d mails, want the alert once", len(msgs))
	}
}

// alertd starts while the broker is unreachable: it keeps trying, reports
// unhealthy meanwhile, and alerts once the broker is up.
func TestStartWhileBrokerIsDown(t *testing.T) {
	broker := mqtttest.Start(t)
	broker.Stop()
	srv := smtptest.Start(t, smtptest.Options{})
	s := newSetup(t, mailConfig(broker.URL(), srv.Port, ""))
	p := s.launch()
	time.Sleep(2 * time.Second)
	resp, err := http.Get(p.http + "/healthz")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz while the broker is down: %v %v, want 503", err, resp)
	}
	resp.Body.Close()
	broker.Restart()
	p.waitHealthy(t)
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "s/a/t", `{"temp": 31}`)
	if m := srv.WaitMessages(t, 1, 15*time.Second)[0]; m.Subject != "hot a" {
		t.Errorf("mail %q", m.Subject)
	}
}

// The rate limit holds during an outage too: what it admitted is queued
// and delivered once the server is back; the rest waits for the summary.
func TestRateLimitHoldsThroughAnOutage(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDown(true)
	cfg := strings.Replace(mailConfig(broker.URL(), srv.Port, ""), "rate_limit: 10000/h", "rate_limit: 2/h", 1)
	s := newSetup(t, cfg)
	p := s.start()
	pub := mqtttest.NewPublisher(t, broker.URL())
	for i := range 5 {
		pub.Publish(t, fmt.Sprintf("s/d%d/t", i), `{"temp": 31}`)
	}
	waitFor(t, 15*time.Second, "two mails queued", func() bool { return len(p.outbox(t).Pending) == 2 })
	srv.SetDown(false)
	srv.WaitMessages(t, 2, 15*time.Second)
	time.Sleep(time.Second)
	if n := len(srv.Messages()); n != 2 {
		t.Errorf("%d mails after the outage, want the 2 the rate limit admitted", n)
	}
}
