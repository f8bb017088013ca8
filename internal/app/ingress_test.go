package app

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/smtptest"
)

// ingressConfig: the embedded broker, a plain upstream SMTP server, and
// both device listeners on loopback.
func ingressConfig(upstream int) string {
	return fmt.Sprintf(`mqtt: {listen: 127.0.0.1:0}
store: {path: ${DIR}/alertd.db}
http: {listen: 127.0.0.1:0}
smtp:
  host: 127.0.0.1
  port: %d
  security: none
  from: "Alertas <alerts@example.org>"
  retry: {initial: 50ms, max: 200ms, give_up_after: 1m}
ingress:
  relay_to: [ops@example.org]
  smtp:
    listen: 127.0.0.1:0
    hostname: alertd.test
    users: [{username: arduino, password: s3cr3t-pw}]
  http:
    listen: 127.0.0.1:0
    tokens: [dev1ce-t0ken]
defaults: {to: [ops@example.org], cooldown: 0s}
rules:
  - {name: hot, topic: "sensors/+/telemetry", field: temp, above: 30, subject: "hot {{.Device}}"}
  - {name: sketch-alarm, topic: "smtp/+", field: subject, equals: ALARM, subject: "alarm from {{.Device}}"}
`, upstream)
}

func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s not found: install %s (scripts/test.sh does)", tool, pkg)
	}
	return p
}

func swaks(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	base := []string{"--server", host, "--port", port, "--from", "kitchen@casa.lan",
		"--auth", "LOGIN", "--auth-user", "arduino", "--auth-password", "s3cr3t-pw", "--timeout", "10"}
	out, err := exec.Command(need(t, "swaks", "swaks"), append(base, args...)...).CombinedOutput()
	return string(out), err
}

// The seed's Raspberry Pi relay: a device mails alertd over SMTP with
// AUTH LOGIN (swaks, a real client), alertd relays it upstream once as
// smtp.from, holds back the same mail sent again, refuses a recipient
// outside relay_to, and turns a mail into an event a rule fires on.
func TestSMTPIngressRelaysOnceAndNeverOpenly(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	app := startApp(t, t.TempDir(), ingressConfig(srv.Port))
	addr := app.SMTPIngressAddr()

	if out, err := swaks(t, addr, "--to", "ops@example.org", "--header", "Subject: Cellar flooded", "--body", "Water at 03:12"); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	m := srv.WaitMessages(t, 1, 10*time.Second)[0]
	if m.Subject != "Cellar flooded" || !strings.Contains(m.Body, "Water at 03:12") || m.From != "alerts@example.org" {
		t.Fatalf("relayed mail: subject %q, body %q, envelope from %q", m.Subject, m.Body, m.From)
	}
	if out, err := swaks(t, addr, "--to", "ops@example.org", "--header", "Subject: Cellar flooded", "--body", "Water at 03:12"); err != nil {
		t.Fatalf("the same mail again: %v\n%s", err, out)
	}
	out, err := swaks(t, addr, "--to", "someone@elsewhere.example", "--header", "Subject: spam")
	if err == nil || !strings.Contains(out, "550 5.7.1") {
		t.Fatalf("a recipient outside relay_to was not refused with 550 5.7.1:\n%s", out)
	}
	if out, err := swaks(t, addr, "--to", "sensor@alertd.test", "--header", "Subject: ALARM", "--body", "door open"); err != nil {
		t.Fatalf("mail to alertd itself: %v\n%s", err, out)
	}
	msgs := srv.WaitMessages(t, 2, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // a copy of the duplicate would arrive here
	msgs = srv.Messages()
	if len(msgs) != 2 || msgs[1].Subject != "alarm from arduino" {
		t.Fatalf("mails %v: want the relayed one once, then the rule's alarm", subjects(msgs))
	}
	// The client's next relayed mail says one of its mails was held back.
	if out, err := swaks(t, addr, "--to", "ops@example.org", "--header", "Subject: Cellar dry", "--body", "Pump ran"); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if m := srv.WaitMessages(t, 3, 10*time.Second)[2]; m.Subject != "Cellar dry" || m.Header.Get("X-Alertd-Held-Back") != "1" {
		t.Errorf("next relayed mail %q has X-Alertd-Held-Back %q, want 1", m.Subject, m.Header.Get("X-Alertd-Held-Back"))
	}
	if got := app.counter("alertd_ingress_smtp_total", "relay_denied"); got < 1 {
		t.Errorf("alertd_ingress_smtp_total{result=relay_denied} = %v", got)
	}
}

// A device that can only do HTTP: a form POST is a reading that fires the
// same rule an MQTT publish would, /v1/mail is relayed within relay_to,
// and a request without the token gets 401.
func TestHTTPIngressEventsAndMail(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	app := startApp(t, t.TempDir(), ingressConfig(srv.Port))
	base := "http://" + app.HTTPIngressAddr()
	curl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(need(t, "curl", "curl"), append([]string{"-s", "-o", "/dev/null", "-w", "%{http_code}"}, args...)...).Output()
		if err != nil {
			t.Fatalf("curl %v: %v", args, err)
		}
		return string(out)
	}
	if code := curl("-d", "temp=31.5", base+"/v1/events/sensors/shed/telemetry"); code != "401" {
		t.Fatalf("without a token: %s, want 401", code)
	}
	if code := curl("-H", "Authorization: Bearer dev1ce-t0ken", "-d", "temp=31.5", base+"/v1/events/sensors/shed/telemetry"); code != "202" {
		t.Fatalf("form event: %s, want 202", code)
	}
	if m := srv.WaitMessages(t, 1, 10*time.Second)[0]; m.Subject != "hot shed" {
		t.Fatalf("mail %q, want the rule's", m.Subject)
	}
	if code := curl("-u", "esp32:dev1ce-t0ken", "--data-urlencode", "to=someone@elsewhere.example", "--data-urlencode", "subject=x", base+"/v1/mail"); code != "403" {
		t.Fatalf("mail outside relay_to: %s, want 403", code)
	}
	if code := curl("-u", "esp32:dev1ce-t0ken", "--data-urlencode", "to=ops@example.org", "--data-urlencode", "subject=Cellar flooded",
		"--data-urlencode", "text=Water!", base+"/v1/mail"); code != "202" {
		t.Fatalf("mail: %s, want 202", code)
	}
	msgs := srv.WaitMessages(t, 2, 10*time.Second)
	if msgs[1].Subject != "Cellar flooded" || !strings.Contains(msgs[1].Body, "Water!") {
		t.Fatalf("relayed HTTP mail %q / %q", msgs[1].Subject, msgs[1].Body)
	}
	// Each source is reported on its own.
	metrics := httpGet(t, "http://"+app.HTTPAddr()+"/metrics", 200)
	for _, src := range []string{"mqtt", "smtp", "http"} {
		if want := `alertd_source_up{source="` + src + `"} 1`; !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
