package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/smtptest"
)

// The mail of these tests, as a sketch writes it by hand: its first line
// of text, and the rest it had not sent yet when alertd died.
const (
	crashHead  = "From: <cellar@casa.lan>\r\nTo: <ops@example.org>\r\nSubject: Cellar flooded\r\n\r\nWater at 12 cm\r\n"
	crashTail  = "Pump started\r\n.\r\n"
	crashWhole = "Water at 12 cm\nPump started"
)

// kill -9 while a device is in the middle of its DATA, before the final
// dot: the device hears no 250, so it will send the mail again; alertd
// stored nothing of the half mail — after the restart the outbox is
// empty and nothing goes upstream — and the device's retry is the one
// copy relayed, whole. (TestDeviceMailSurvivesKill9After250 is the other
// side: a mail that heard 250 is kept.)
func TestKill9MidDATAKeepsNothingAndTheRetryIsTheOnlyCopy(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDown(true) // whatever alertd stored would wait in the outbox
	yaml, in := ingressYAML(t, "")
	s := newSetup(t, mailConfig(broker.URL(), srv.Port, yaml))
	p := s.start()

	dev := dialHand(t, in, "127.0.0.2")
	dev.startData("cellar@casa.lan")
	dev.write(crashHead)
	time.Sleep(100 * time.Millisecond) // alertd reads what it was sent
	p.kill()
	if code, msg, err := dev.reply(); err == nil {
		t.Fatalf("the device heard %d %q from a killed alertd, want the connection lost", code, msg)
	}

	p = s.start()
	l := p.outbox(t)
	if len(l.Pending) != 0 || len(l.Dead) != 0 || len(l.Unreadable) != 0 {
		t.Fatalf("after the restart the outbox holds %d pending, %d dead, %d unreadable: the half mail was stored", len(l.Pending), len(l.Dead), len(l.Unreadable))
	}
	srv.SetDown(false)
	settle()
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("%d mails upstream from a DATA that never ended", n)
	}

	// The device's retry, over a new connection.
	wantQueued(t, "the retry", pythonMail(t, in, "127.0.0.2", "cellar@casa.lan", "Cellar flooded", crashWhole))
	srv.WaitMessages(t, 1, 15*time.Second)
	settle()
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d mails upstream, want the retry once (%q)", len(msgs), subjects(msgs))
	}
	if got := strings.TrimSpace(strings.ReplaceAll(msgs[0].Body, "\r\n", "\n")); msgs[0].Subject != "Cellar flooded" || got != crashWhole {
		t.Errorf("relayed %q with text %q, want the whole retried mail", msgs[0].Subject, got)
	}
}

// alertd dies between its commit and the device hearing 250 (the device
// sent the final dot; the reply never reached it), with the upstream down.
// The device sends the mail again after the restart: alertd recognises it
// (ingress.cooldown, from the store) and answers 250 held back, so when
// the upstream is back it gets the mail once, not once per attempt.
func TestKill9BeforeTheDeviceHeard250SendsOneCopy(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDown(true)
	yaml, in := ingressYAML(t, "")
	s := newSetup(t, mailConfig(broker.URL(), srv.Port, yaml))
	p := s.start()

	dev := dialHand(t, in, "127.0.0.2")
	dev.startData("cellar@casa.lan")
	dev.write(crashHead + crashTail)
	// The device does not read the reply: as far as it knows, alertd died
	// with its mail.
	waitFor(t, 10*time.Second, "the mail committed", func() bool { return len(p.outbox(t).Pending) == 1 })
	p.kill()

	p = s.start()
	if n := len(p.outbox(t).Pending); n != 1 {
		t.Fatalf("%d mails pending after the restart, want the committed one", n)
	}
	wantHeldBack(t, "the retry after the restart", pythonMail(t, in, "127.0.0.2", "cellar@casa.lan", "Cellar flooded", crashWhole))
	if n := len(p.outbox(t).Pending); n != 1 {
		t.Fatalf("%d mails pending after the retry, want still 1", n)
	}

	srv.SetDown(false)
	srv.WaitMessages(t, 1, 15*time.Second)
	settle()
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d mails upstream, want one copy (%q)", len(msgs), subjects(msgs))
	}
	if got := strings.TrimSpace(strings.ReplaceAll(msgs[0].Body, "\r\n", "\n")); msgs[0].Subject != "Cellar flooded" || got != crashWhole {
		t.Errorf("relayed %q with text %q, want the device's mail", msgs[0].Subject, got)
	}
}
