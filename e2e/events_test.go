package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/smtptest"
)

// eventsConfig: a real broker, a plain upstream, the device listeners and
// one rule with alertd's default subject and body, so a mail shows
// everything a reading carries (topic, value, threshold, payload).
func eventsConfig(broker string, smtpPort int, ingress string) string {
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
  - {name: greenhouse-hot, topic: "sensors/+/telemetry", field: temp, above: 30, hysteresis: 1.5, severity: critical}
`, broker, time.Now().UnixNano(), smtpPort, ingress)
}

var (
	stampRE    = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z]+`)
	durationRE = regexp.MustCompile(`after [0-9a-zµ.]+\.`)
	boundaryRE = regexp.MustCompile(`boundary=\S+`)
)

// asUser is a mail as its reader sees it, with the device's name and the
// moments it was written replaced, so two devices' mails compare.
func asUser(m smtptest.Message, device string) string {
	var b strings.Builder
	for _, k := range []string{"From", "To", "Subject", "Auto-Submitted", "X-Alertd-Rule", "X-Alertd-State", "Content-Type"} {
		fmt.Fprintf(&b, "%s: %s\n", k, m.Header.Get(k))
	}
	fmt.Fprintf(&b, "envelope: %s -> %v\n\n", m.From, m.To)
	if m.Subject != m.Header.Get("Subject") {
		fmt.Fprintf(&b, "decoded subject: %s\n", m.Subject)
	}
	b.WriteString(m.Body)
	s := strings.ReplaceAll(b.String(), device, "<device>")
	s = stampRE.ReplaceAllString(s, "<time>")
	s = boundaryRE.ReplaceAllString(s, "boundary=<random>")
	return durationRE.ReplaceAllString(s, "after <duration>.")
}

// wantStamps fails unless every moment a mail shows is one this test saw
// pass: a reading stamped with a zero or foreign clock would hide behind
// asUser's replacement.
func wantStamps(t *testing.T, m smtptest.Message, from, to time.Time) {
	t.Helper()
	stamps := stampRE.FindAllString(m.Body, -1)
	if len(stamps) == 0 {
		t.Errorf("%q shows no time", m.Subject)
	}
	for _, st := range stamps {
		at, err := time.ParseInLocation("2006-01-02 15:04:05 MST", st, time.Local)
		if err != nil || at.Before(from.Truncate(time.Second)) || at.After(to) {
			t.Errorf("%q shows %q, want a moment between %s and %s", m.Subject, st, from.Format(time.TimeOnly), to.Format(time.TimeOnly))
		}
	}
}

// A reading posted to /v1/events/<topic> is the same reading as an MQTT
// publish of the same payload on the same topic: it fires the same rule
// with the same mail, a second breaching reading sends nothing, and the
// recovering one sends the resolved mail, in the firing mail's thread.
// One device publishes to real Mosquitto, the other posts over HTTP.
func TestHTTPEventAlertsLikeAnMQTTPublish(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	yaml, in := ingressYAML(t, "")
	s := newSetup(t, eventsConfig(broker.URL(), srv.Port, yaml))
	s.start()
	begin := time.Now()
	pub := mqtttest.NewPublisher(t, broker.URL())
	const mq, web = "mqtt-sensor", "http-sensor"
	post := func(payload string) {
		t.Helper()
		if a := devicePost(t, "127.0.0.1", in.http+"/v1/events/sensors/"+web+"/telemetry", payload); a.Status != 202 || !strings.HasPrefix(a.ID, "ev-") {
			t.Fatalf("POST /v1/events %s: %+v, want 202 with an event id", payload, a)
		}
	}
	const breach, still, recovered = `{"temp": 31.5, "hum": 40}`, `{"temp": 32.25, "hum": 38}`, `{"temp": 25, "hum": 45}`

	pub.Publish(t, "sensors/"+mq+"/telemetry", breach)
	mqFiring := srv.WaitMessages(t, 1, 15*time.Second)[0]
	post(breach)
	webFiring := srv.WaitMessages(t, 2, 15*time.Second)[1]
	if got, want := asUser(webFiring, web), asUser(mqFiring, mq); got != want {
		t.Fatalf("the HTTP event's mail differs from the MQTT reading's:\n--- HTTP\n%s\n--- MQTT\n%s", got, want)
	}
	if !strings.Contains(mqFiring.Subject, mq) || !strings.Contains(webFiring.Subject, web) || mqFiring.Header.Get("X-Alertd-State") != "firing" {
		t.Fatalf("firing mails %q and %q (%s), want each naming its device", mqFiring.Subject, webFiring.Subject, mqFiring.Header.Get("X-Alertd-State"))
	}

	// Still breaching: each alert is firing already.
	pub.Publish(t, "sensors/"+mq+"/telemetry", still)
	post(still)
	// Readings of one topic are handled in order, so the resolved mail
	// comes after the second reading was handled.
	pub.Publish(t, "sensors/"+mq+"/telemetry", recovered)
	mqResolved := srv.WaitMessages(t, 3, 15*time.Second)[2]
	post(recovered)
	webResolved := srv.WaitMessages(t, 4, 15*time.Second)[3]
	settle()
	if msgs := srv.Messages(); len(msgs) != 4 {
		t.Fatalf("%d mails, want a firing and a resolved mail per device: %q", len(msgs), subjects(msgs))
	}
	for _, c := range []struct {
		device           string
		firing, resolved smtptest.Message
	}{{mq, mqFiring, mqResolved}, {web, webFiring, webResolved}} {
		if got := c.resolved.Header.Get("X-Alertd-State"); got != "resolved" || !strings.Contains(c.resolved.Subject, c.device) {
			t.Errorf("%s: third mail %q is %q, want its resolved mail (a second breach must not mail)", c.device, c.resolved.Subject, got)
		}
		if got, want := c.resolved.Header.Get("In-Reply-To"), c.firing.Header.Get("Message-Id"); got != want {
			t.Errorf("%s: resolved mail replies to %q, want its firing mail %q", c.device, got, want)
		}
	}
	for _, m := range srv.Messages() {
		wantStamps(t, m, begin, time.Now())
	}
	if got, want := asUser(webResolved, web), asUser(mqResolved, mq); got != want {
		t.Errorf("the HTTP resolved mail differs from the MQTT one:\n--- HTTP\n%s\n--- MQTT\n%s", got, want)
	}
}
