package app

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/smtptest"
)

const smtpPassword = "app-pass-Zx9!q"

// smtpConfig points alertd at a real broker and a real SMTP server.
func smtpConfig(t *testing.T, broker string, port int, security, caFile, extra, rules string) string {
	t.Setenv("SMTP_PASSWORD", smtpPassword)
	tlsLine := ""
	if caFile != "" {
		tlsLine = fmt.Sprintf("  tls: {ca_file: %s}\n", caFile)
	}
	return fmt.Sprintf(`mqtt:
  broker: %s
  client_id: alertd-smtp-%d
smtp:
  host: 127.0.0.1
  port: %d
  security: %s
  username: alerts@example.org
  password: ${SMTP_PASSWORD}
  from: "Alertas <alerts@example.org>"
  timeout: 5s
  retry: {initial: 50ms, max: 200ms, give_up_after: 1m}
%s%sstore: {path: ${DIR}/alertd.db}
http: {listen: 127.0.0.1:0}
defaults: {to: ["Ops <ops@example.org>"]}
rules:
%s`, broker, time.Now().UnixNano(), port, security, tlsLine, extra, rules)
}

func (r *running) attempts(result string) float64 {
	return testutil.ToFloat64(r.Metrics().MailAttempts.WithLabelValues(result))
}

func TestMosquittoToAuthenticatedSMTPThrough4xx(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{"alerts@example.org": smtpPassword}})
	srv.Fail("DATA", 2, 451, [3]int{4, 3, 0}, "Requested action aborted: local error")
	app := startApp(t, t.TempDir(), smtpConfig(t, broker.URL(), srv.Port, "starttls", srv.CAFile, "", greenhouse))

	pub := mqtttest.NewPublisher(t, broker.URL())
	pub.Publish(t, "sensors/salon/telemetry", `{"temp": 31.5}`)
	m := srv.WaitMessages(t, 1, 15*time.Second)[0]
	waitFor(t, 5*time.Second, "delivery counted", func() bool { return app.counter("sent") == 1 })
	time.Sleep(300 * time.Millisecond) // a second copy would show up here
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d copies delivered, want exactly 1", n)
	}
	if m.Subject != "Temperatura alta en el salón salon: 31.5 °C" {
		t.Errorf("subject %q", m.Subject)
	}
	if m.AuthUser != "alerts@example.org" || m.From != "alerts@example.org" || !slices.Equal(m.To, []string{"ops@example.org"}) {
		t.Errorf("envelope from %q to %v, auth %q", m.From, m.To, m.AuthUser)
	}
	if got := app.attempts("4xx"); got != 2 {
		t.Errorf("4xx attempts %v, want 2", got)
	}
	if got := app.counter("failed", "temporary"); got != 2 {
		t.Errorf("failed{kind=temporary} %v, want 2", got)
	}
	if strings.Contains(app.logs.String(), smtpPassword) {
		t.Error("the SMTP password appears in the log")
	}
	if !strings.Contains(app.logs.String(), "Requested action aborted") {
		t.Error("the log does not say what the server replied")
	}
}

func TestPermanentRefusalGoesToDeadLetters(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.ImplicitTLS, Users: map[string]string{"alerts@example.org": smtpPassword}})
	srv.Fail("DATA", -1, 554, [3]int{5, 7, 1}, "Message rejected as spam")
	app := startApp(t, t.TempDir(), smtpConfig(t, broker.URL(), srv.Port, "tls", srv.CAFile, "", greenhouse))
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "sensors/salon/telemetry", `{"temp": 40}`)

	waitFor(t, 15*time.Second, "mail buried", func() bool { return app.counter("dead") == 1 })
	if got := app.counter("failed", "permanent"); got != 1 {
		t.Errorf("failed{kind=permanent} = %v, want 1", got)
	}
	if got := app.attempts("5xx"); got != 1 {
		t.Errorf("5xx attempts %v, want 1 (no retry)", got)
	}
	_, dead, err := app.outbox.List()
	if err != nil || len(dead) != 1 || !strings.Contains(dead[0].LastError, "Message rejected as spam") {
		t.Fatalf("dead letters %v (%v): want the mail with the server's words", dead, err)
	}
	if len(srv.Messages()) != 0 {
		t.Error("a refused mail was delivered")
	}
}

func TestAuthFailureKeepsMailQueuedAndSaysSoOnce(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{"alerts@example.org": smtpPassword}})
	// The first refusal is the preflight's at start; the deliverer meets
	// the other three.
	srv.Fail("AUTH", 4, 535, [3]int{5, 7, 8}, "Username and Password not accepted")
	app := startApp(t, t.TempDir(), smtpConfig(t, broker.URL(), srv.Port, "starttls", srv.CAFile, "", greenhouse))
	waitFor(t, 5*time.Second, "preflight done", func() bool { return strings.Contains(app.logs.String(), "smtp preflight failed") })
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "sensors/salon/telemetry", `{"temp": 40}`)

	srv.WaitMessages(t, 1, 15*time.Second)
	waitFor(t, 5*time.Second, "delivery counted", func() bool { return app.counter("sent") == 1 })
	if got := app.counter("failed", "auth"); got != 3 {
		t.Errorf("failed{kind=auth} = %v, want 3", got)
	}
	if app.counter("dead") != 0 {
		t.Error("an authentication failure must not bury the mail")
	}
	logs := app.logs.String()
	if n := strings.Count(logs, "fix the smtp configuration"); n != 1 {
		t.Errorf("the auth problem was logged %d times, want once", n)
	}
	if !strings.Contains(logs, "app password") || !strings.Contains(logs, "smtp delivery works again") {
		t.Errorf("log lacks the plain-words hint or the recovery:\n%s", logs)
	}
	if strings.Contains(logs, smtpPassword) {
		t.Error("the SMTP password appears in the log")
	}
}

// The same path against an independent, strict server: aiosmtpd refuses a
// nested MAIL and prompts LOGIN like Microsoft's servers.
func TestStrictServerEndToEnd(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.StartStrict(t, smtptest.StrictOptions{User: "alerts@example.org", Password: smtpPassword})
	app := startApp(t, t.TempDir(), smtpConfig(t, broker.URL(), srv.Port, "none", "",
		"  auth: login\n  allow_insecure_auth: true\n", `
  - {name: hot, topic: "s/+/t", field: temp, above: 30, to: ["reject-me@example.org", "ops@example.org"]}
`))
	pub := mqtttest.NewPublisher(t, broker.URL())
	pub.Publish(t, "s/a/t", `{"temp": 31}`)
	pub.Publish(t, "s/b/t", `{"temp": 32}`)
	msgs := srv.WaitMessages(t, 2, 15*time.Second)
	for _, m := range msgs {
		if !slices.Equal(m.To, []string{"ops@example.org"}) || !strings.HasPrefix(m.Subject, "[warning] hot: ") {
			t.Errorf("strict server got %q to %v", m.Subject, m.To)
		}
	}
	waitFor(t, 5*time.Second, "refusals counted", func() bool { return app.counter("failed", "permanent") == 2 })
}
