package app

import (
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/smtptest"
)

// The alert's life against real Mosquitto and a real SMTP server, with
// short durations: for, hysteresis, reminders and the resolved mail in
// one thread, a when: expression, and a device's last will.
func TestAlertLifeOverSMTP(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{"alerts@example.org": smtpPassword}})
	startApp(t, t.TempDir(), smtpConfig(t, broker.URL(), srv.Port, "starttls", srv.CAFile, "", `
  - {name: hot, topic: "gh/+/t", field: temp, above: 30, for: 300ms, hysteresis: 1.5, repeat: 700ms, cooldown: 0s}
  - {name: dry-heat, topic: "gh/+/t", when: 'temp > 30 && hum < 20', cooldown: 0s}
  - {name: offline, topic: "dev/+/status", equals: offline, severity: critical, cooldown: 0s}
`))
	pub := mqtttest.NewPublisher(t, broker.URL())
	bySubject := func(msgs []smtptest.Message, prefix string) []smtptest.Message {
		var out []smtptest.Message
		for _, m := range msgs {
			if strings.HasPrefix(m.Subject, prefix) {
				out = append(out, m)
			}
		}
		return out
	}

	// One reading, then nothing: "for" fires by its timer; the when:
	// rule fires at once on the same reading.
	pub.Publish(t, "gh/a/t", `{"temp": 31, "hum": 15}`)
	msgs := srv.WaitMessages(t, 2, 10*time.Second)
	if got := bySubject(msgs, "[warning] dry-heat: a temp > 30 && hum < 20"); len(got) != 1 {
		t.Errorf("when: rule mails %d, want 1: %v", len(got), subjects(msgs))
	}
	first := bySubject(msgs, "[warning] hot: a temp=31")
	if len(first) != 1 {
		t.Fatalf("for: rule mails %v, want one firing mail", subjects(msgs))
	}
	// A reminder while it keeps firing, in the same thread.
	waitFor(t, 10*time.Second, "a reminder", func() bool {
		for _, m := range srv.Messages() {
			if strings.Contains(m.Body, "Still firing: hot") {
				return true
			}
		}
		return false
	})
	// 29.5 is inside the hysteresis band: no resolved mail; 28 clears it.
	pub.Publish(t, "gh/a/t", `{"temp": 29.5, "hum": 40}`)
	pub.Publish(t, "gh/a/t", `{"temp": 28, "hum": 40}`)
	resolvedOf := func(rule string) []smtptest.Message {
		var out []smtptest.Message
		for _, m := range srv.Messages() {
			if m.Header != nil && m.Header.Get("X-Alertd-Rule") == rule && m.Header.Get("X-Alertd-State") == "resolved" {
				out = append(out, m)
			}
		}
		return out
	}
	waitFor(t, 10*time.Second, "the resolved mail", func() bool { return len(resolvedOf("hot")) == 1 })
	// Every later mail of the episode is a reply in its conversation: the
	// firing mail's subject with "Re: ", and its Message-ID in In-Reply-To.
	thread := first[0].Header.Get("Message-Id")
	for _, m := range srv.Messages() {
		if m.Header.Get("X-Alertd-State") == "resolved" && m.Header.Get("X-Alertd-Rule") == "hot" || strings.Contains(m.Body, "Still firing: hot") {
			if got := m.Header.Get("In-Reply-To"); got != thread || m.Subject != "Re: [warning] hot: a temp=31" {
				t.Errorf("%q replies to %q, want the firing mail %q and its subject", m.Subject, got, thread)
			}
		}
	}
	resolved := resolvedOf("hot")[0]
	if !strings.Contains(resolved.Body, "Resolved: hot") || !strings.Contains(resolved.Body, "28") {
		t.Errorf("resolved mail body %q should say resolved and carry the clearing value 28, not 29.5", resolved.Body)
	}

	// An ESP32 loses power: the broker publishes its last will.
	mqtttest.NewDevice(t, broker.Addr(), "esp32-porch", "dev/porch/status", "offline").Vanish()
	waitFor(t, 10*time.Second, "the last-will alert", func() bool {
		return len(bySubject(srv.Messages(), "[critical] offline: porch offline")) == 1
	})
}

func subjects(msgs []smtptest.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.Subject)
	}
	return out
}

// When alertd loses the broker, silence detection pauses: a device heard
// right after the reconnect is not reported silent for the outage, and
// one that stays quiet is, silent_for after the reconnect.
func TestSilencePausesWhileTheBrokerIsAway(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{"alerts@example.org": smtpPassword}})
	app := startApp(t, t.TempDir(), smtpConfig(t, broker.URL(), srv.Port, "starttls", srv.CAFile, "", `
  - {name: quiet, topic: "hb/+", silent_for: 1500ms, cooldown: 0s}
`))
	pub := mqtttest.NewPublisher(t, broker.URL())
	pub.Publish(t, "hb/a", "alive")
	pub.Publish(t, "hb/b", "alive")
	waitFor(t, 5*time.Second, "readings", func() bool { return app.counter("received") == 2 })
	broker.Stop()
	time.Sleep(3 * time.Second) // twice silent_for, while alertd hears nothing
	broker.Restart()
	waitFor(t, 30*time.Second, "alertd back", app.Ready)
	// a keeps reporting after the outage; b stays quiet.
	pub2 := mqtttest.NewPublisher(t, broker.URL())
	deadline := time.Now().Add(10 * time.Second)
	for len(srv.Messages()) == 0 && time.Now().Before(deadline) {
		pub2.Publish(t, "hb/a", "alive")
		time.Sleep(300 * time.Millisecond)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || !strings.HasPrefix(msgs[0].Subject, "[warning] quiet: b silent for") {
		t.Fatalf("mails %v, want only b's silence, after the reconnect", subjects(msgs))
	}
}
