package app

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/alertd/alertd/internal/mqtttest"
)

// spoolConfig is a configuration against broker (empty: embedded) that
// writes mail to the spool.
func spoolConfig(broker, rules string) string {
	mqtt := "mqtt:\n  listen: 127.0.0.1:0\n"
	if broker != "" {
		mqtt = fmt.Sprintf("mqtt:\n  broker: %s\n  client_id: alertd-test-%d\n", broker, time.Now().UnixNano())
	}
	return mqtt + `
store: {path: ${DIR}/alertd.db}
http: {listen: 127.0.0.1:0}
defaults: {to: ["Ops <ops@example.org>"]}
rules:
` + rules
}

const greenhouse = `
  - name: greenhouse-hot
    topic: "sensors/+/telemetry"
    field: temp
    above: 30
    cooldown: 30m
    subject: "Temperatura alta en el salón {{.Device}}: {{.Value}} °C"
    body: "{{.Topic}} reported {{.Field}}={{.Value}} (threshold {{.Threshold}}), held back {{.Suppressed}}"
`

func TestQuickStartEmbeddedBrokerToSpool(t *testing.T) {
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig("", greenhouse))
	pub := mqtttest.NewPublisher(t, app.BrokerURL())
	pub.Publish(t, "sensors/greenhouse/telemetry", `{"temp": 31.5}`)

	mails := waitSpooled(t, filepath.Join(dir, "spool"), 1)
	m := mails[0]
	if want := "Temperatura alta en el salón greenhouse: 31.5 °C"; m.Subject != want {
		t.Errorf("subject %q, want %q", m.Subject, want)
	}
	if want := "sensors/greenhouse/telemetry reported temp=31.5 (threshold 30), held back 0"; m.Body != want {
		t.Errorf("body %q, want %q", m.Body, want)
	}
	for _, h := range []string{"From", "To", "Date", "Message-Id", "Mime-Version", "Content-Type"} {
		if m.Header.Get(h) == "" {
			t.Errorf("header %s missing:\n%s", h, m.Raw)
		}
	}
	if !strings.HasPrefix(m.Header.Get("Content-Type"), "multipart/alternative") || !strings.Contains(m.Text.Get("Content-Type"), "charset=utf-8") {
		t.Errorf("Content-Type %q, text part %q: want multipart/alternative, text in utf-8", m.Header.Get("Content-Type"), m.Text.Get("Content-Type"))
	}
	// The HTML part says the state first and how to silence it; the text
	// part ends with the same command.
	silence := "alertd silence add -config " + filepath.Join(dir, "alertd.yaml") + " -rule greenhouse-hot -series sensors/greenhouse/telemetry -for 2h"
	if !strings.Contains(m.HTML, "FIRING: greenhouse-hot on greenhouse") || !strings.Contains(m.HTML, silence) || strings.Contains(m.HTML, "<script") {
		t.Errorf("HTML part:\n%s", m.HTML)
	}
	if !strings.Contains(m.Footer, silence) {
		t.Errorf("text footer %q lacks %q", m.Footer, silence)
	}
	if to := m.Header.Get("To"); !strings.Contains(to, "ops@example.org") {
		t.Errorf("To %q", to)
	}
	if !strings.Contains(string(m.Raw), "\r\n") || strings.Contains(strings.ReplaceAll(string(m.Raw), "\r\n", ""), "\n") {
		t.Errorf("message must use CRLF line endings only")
	}
}

func TestMosquittoStateDedupeAndBadPayloads(t *testing.T) {
	broker := mqtttest.Start(t)
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig(broker.URL(), greenhouse))
	pub := mqtttest.NewPublisher(t, broker.URL())
	spool := filepath.Join(dir, "spool")

	hostile := []string{
		`not json`, `{"temp": "hot"}`, `{"temp": NaN}`, `{"temp": 1e999}`, "\xff\xfe\x00",
		strings.Repeat(`{"a":`, 5000) + strings.Repeat("}", 5000), strings.Repeat("x", 200<<10),
		`{"hum": 40}`, `[]`, `{"temp": {"v": 99}}`,
	}
	for _, p := range hostile {
		pub.Publish(t, "sensors/greenhouse/telemetry", p)
	}
	// Three hot readings are one alert: one mail, not three.
	for range 3 {
		pub.Publish(t, "sensors/greenhouse/telemetry", `{"temp": 35}`)
	}
	pub.Publish(t, "sensors/greenhouse/telemetry", `{"temp": 20}`) // recovers: one resolved mail
	waitFor(t, 15*time.Second, "all readings processed", func() bool { return app.counter("received") == float64(len(hostile)+4) })
	mails := waitSpooled(t, spool, 2)
	// Every hostile payload but the one that simply lacks the field.
	if got := app.counter("invalid", "greenhouse-hot"); got != float64(len(hostile)-1) {
		t.Errorf("alertd_payload_invalid_total = %v, want %d", got, len(hostile)-1)
	}
	if got := app.counter("field_missing", "greenhouse-hot"); got != 1 {
		t.Errorf("alertd_payload_field_missing_total = %v, want 1 ({\"hum\": 40})", got)
	}
	if got := testutil.ToFloat64(app.Metrics().PayloadInvalid.WithLabelValues("greenhouse-hot", "not_number")); got != 1 {
		t.Errorf(`alertd_payload_invalid_total{reason="not_number"} = %v, want 1 ({"temp": "hot"})`, got)
	}
	firing, resolved := mails[0], mails[1]
	if firing.Subject != "Temperatura alta en el salón greenhouse: 35 °C" || firing.Header.Get("X-Alertd-State") != "firing" {
		t.Errorf("first mail %q (%s), want the firing one", firing.Subject, firing.Header.Get("X-Alertd-State"))
	}
	// The resolved mail is a reply in the same conversation (Gmail and
	// Outlook thread by subject): "Re: " and the firing mail's subject.
	if resolved.Subject != "Re: Temperatura alta en el salón greenhouse: 35 °C" || resolved.Header.Get("X-Alertd-State") != "resolved" ||
		!strings.Contains(resolved.HTML, "RESOLVED after") {
		t.Errorf("second mail %q (%s), want the resolved reply", resolved.Subject, resolved.Header.Get("X-Alertd-State"))
	}
	if got, want := resolved.Header.Get("In-Reply-To"), firing.Header.Get("Message-Id"); got == "" || got != want {
		t.Errorf("resolved mail In-Reply-To %q, want the firing mail's Message-Id %q", got, want)
	}

	// It flaps back within the 30m cooldown: held back, and since its
	// firing mail never went out, its recovery sends nothing either.
	pub.Publish(t, "sensors/greenhouse/telemetry", `{"temp": 36}`)
	waitFor(t, 10*time.Second, "flap held back", func() bool { return app.counter("suppressed", "greenhouse-hot", "cooldown") == 1 })
	pub.Publish(t, "sensors/greenhouse/telemetry", `{"temp": 21}`)
	// Another series of the rule: its mail reports the one held back.
	pub.Publish(t, "sensors/shed/telemetry", `{"temp": 33}`)
	waitSpooled(t, spool, 3)
	time.Sleep(200 * time.Millisecond) // a fourth mail would be a dedupe failure
	if mails = spooled(t, spool); len(mails) != 3 {
		t.Fatalf("got %d mails, want 3:\n%v", len(mails), mails)
	}
	if want := "sensors/shed/telemetry reported temp=33 (threshold 30), held back 1"; mails[2].Body != want {
		t.Errorf("third mail body %q, want %q", mails[2].Body, want)
	}
}

func TestHeaderInjectionFromPayload(t *testing.T) {
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig("", `
  - name: door
    topic: "doors/+"
    field: state
    not_equals: closed
    subject: "Door {{.Device}}: {{.Value}}"
`))
	pub := mqtttest.NewPublisher(t, app.BrokerURL())
	pub.Publish(t, "doors/front", `{"state": "open\r\nBcc: victim@example.com\r\nX-Evil: 1"}`)
	m := waitSpooled(t, filepath.Join(dir, "spool"), 1)[0]
	if m.Header.Get("Bcc") != "" || m.Header.Get("X-Evil") != "" {
		t.Fatalf("payload added a header:\n%s", m.Raw)
	}
	if strings.Contains(m.Subject, "\n") || !strings.HasPrefix(m.Subject, "Door front: open Bcc:") {
		t.Errorf("subject %q", m.Subject)
	}
}

func TestBrokerRestartAndReadingsWhileAway(t *testing.T) {
	broker := mqtttest.Start(t)
	dir := t.TempDir()
	cfg := spoolConfig(broker.URL(), `
  - {name: hot, topic: "s/+/t", field: temp, above: 30, cooldown: 0s}
`)
	app := startApp(t, dir, cfg)
	pub := mqtttest.NewPublisher(t, broker.URL())
	pub.Publish(t, "s/a/t", `{"temp": 31}`)
	spool := filepath.Join(dir, "spool")
	waitSpooled(t, spool, 1)

	// The broker restarts: alertd reconnects and resubscribes by itself.
	broker.Restart()
	waitFor(t, 30*time.Second, "alertd reconnected", app.Ready)
	pub2 := mqtttest.NewPublisher(t, broker.URL())
	pub2.Publish(t, "s/b/t", `{"temp": 32}`)
	waitSpooled(t, spool, 2)

	// alertd stops; readings published meanwhile (QoS 1) wait in its
	// persistent session and alert once it is back.
	app.stop(t)
	pub2.Publish(t, "s/c/t", `{"temp": 33}`)
	app2 := startApp(t, dir, cfg)
	_ = app2
	mails := waitSpooled(t, spool, 3)
	var subjects []string
	for _, m := range mails {
		subjects = append(subjects, m.Subject)
	}
	if !strings.Contains(strings.Join(subjects, "|"), "c temp=33") {
		t.Errorf("the reading published while alertd was away did not alert: %q", subjects)
	}
}

func TestForAndSilenceFireOnTheirOwn(t *testing.T) {
	broker := mqtttest.Start(t)
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig(broker.URL(), `
  - {name: slow, topic: "gh/+/t", field: temp, above: 30, for: 400ms, cooldown: 0s}
  - {name: quiet, topic: "hb/+", silent_for: 600ms, cooldown: 0s}
`))
	pub := mqtttest.NewPublisher(t, broker.URL())
	spool := filepath.Join(dir, "spool")

	// One hot reading, then nothing: for: fires by its timer.
	pub.Publish(t, "gh/a/t", `{"temp": 35}`)
	pub.Publish(t, "hb/dev1", `alive`)
	mails := waitSpooled(t, spool, 2)
	var subjects []string
	for _, m := range mails {
		subjects = append(subjects, m.Subject)
	}
	all := strings.Join(subjects, "|")
	for _, want := range []string{"[warning] slow: a temp=35", "[warning] quiet: dev1 silent for "} {
		if !strings.Contains(all, want) {
			t.Errorf("missing mail %q; got %q", want, subjects)
		}
	}
	// The silent device reports again: one resolved mail.
	pub.Publish(t, "hb/dev1", `alive`)
	mails = waitSpooled(t, spool, 3)
	if got := mails[2]; !strings.HasPrefix(got.Subject, "Re: [warning] quiet: dev1 silent for ") || got.Header.Get("X-Alertd-State") != "resolved" {
		t.Errorf("third mail %q (%s), want the silence's resolved reply", got.Subject, got.Header.Get("X-Alertd-State"))
	}
	if app.counter("received") != 3 {
		t.Errorf("received %v readings, want 3", app.counter("received"))
	}
}

func TestAlertStatePublishedBackToMQTT(t *testing.T) {
	broker := mqtttest.Start(t)
	dir := t.TempDir()
	cfg := strings.Replace(spoolConfig(broker.URL(), `
  - {name: hot, topic: "gh/+/t", field: temp, above: 30, cooldown: 0s}
`), "mqtt:\n", "mqtt:\n  state_topic: alertd/state\n", 1)
	startApp(t, dir, cfg)
	pub := mqtttest.NewPublisher(t, broker.URL())
	pub.Publish(t, "gh/a/t", `{"temp": 35}`)
	const topic = "alertd/state/hot/gh/a/t"
	firing := mqtttest.Retained(t, broker.URL(), topic, 10*time.Second, func(p string) bool { return strings.Contains(p, `"firing"`) })
	if !strings.Contains(firing, `"rule":"hot"`) || !strings.Contains(firing, `"series":"gh/a/t"`) || !strings.Contains(firing, `"value":"35"`) {
		t.Fatalf("retained firing state %q", firing)
	}
	pub.Publish(t, "gh/a/t", `{"temp": 20}`)
	resolved := mqtttest.Retained(t, broker.URL(), topic, 10*time.Second, func(p string) bool { return strings.Contains(p, `"resolved"`) })
	if resolved == "" {
		t.Fatal("the resolved state was not published")
	}
}

func TestGroupingTurnsAStormIntoOneMail(t *testing.T) {
	broker := mqtttest.Start(t)
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig(broker.URL(), `
  - {name: heat, topic: "farm/+/t", field: temp, above: 30, group_wait: 700ms, rate_limit: 5/h}
`))
	pub := mqtttest.NewPublisher(t, broker.URL())
	const n = 50
	for i := range n {
		pub.Publish(t, fmt.Sprintf("farm/d%02d/t", i), `{"temp": 35}`)
	}
	spool := filepath.Join(dir, "spool")
	m := waitSpooled(t, spool, 1)[0]
	waitFor(t, 10*time.Second, "all readings processed", func() bool { return app.counter("received") == n })
	time.Sleep(time.Second) // a second group mail would be here
	if mails := spooled(t, spool); len(mails) != 1 {
		t.Fatalf("%d mails for one storm, want 1", len(mails))
	}
	if m.Subject != "[warning] heat: 50 firing" {
		t.Errorf("group subject %q", m.Subject)
	}
	for i := range n {
		if !strings.Contains(m.Body, fmt.Sprintf("farm/d%02d/t", i)) {
			t.Errorf("group mail does not list farm/d%02d/t", i)
		}
	}
	for i := range 3 {
		pub.Publish(t, fmt.Sprintf("farm/d%02d/t", i), `{"temp": 20}`)
	}
	mails := waitSpooled(t, spool, 2)
	if mails[1].Subject != "[warning] heat: 3 resolved" {
		t.Errorf("second group mail %q", mails[1].Subject)
	}
}

// A condition already true at start (a retained reading) fires once: not
// never, and not again at each restart.
func TestRetainedBreachFiresOnceAcrossRestarts(t *testing.T) {
	broker := mqtttest.Start(t)
	dir := t.TempDir()
	pub := mqtttest.NewPublisher(t, broker.URL())
	pub.PublishRetained(t, "gh/a/t", `{"temp": 35}`, true)
	cfg := spoolConfig(broker.URL(), `
  - {name: hot, topic: "gh/+/t", field: temp, above: 30, cooldown: 0s}
`)
	app := startApp(t, dir, cfg)
	spool := filepath.Join(dir, "spool")
	waitSpooled(t, spool, 1)
	app.stop(t)
	for range 2 {
		again := startApp(t, dir, cfg)
		waitFor(t, 10*time.Second, "the retained reading seen again", func() bool { return again.counter("received") >= 1 })
		time.Sleep(200 * time.Millisecond)
		again.stop(t)
	}
	if mails := spooled(t, spool); len(mails) != 1 {
		t.Fatalf("%d mails after two restarts, want the one firing mail", len(mails))
	}
}

func TestHealthzAndMetrics(t *testing.T) {
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig("", greenhouse))
	body := httpGet(t, "http://"+app.HTTPAddr()+"/healthz", 200)
	if strings.TrimSpace(body) != "ok" {
		t.Errorf("healthz %q", body)
	}
	pub := mqtttest.NewPublisher(t, app.BrokerURL())
	pub.Publish(t, "sensors/x/telemetry", `{"temp": 99}`)
	waitSpooled(t, filepath.Join(dir, "spool"), 1)
	// The file is in the spool a moment before the delivery is counted.
	waitFor(t, 5*time.Second, "the delivery counted", func() bool { return app.counter("sent") == 1 })
	metrics := httpGet(t, "http://"+app.HTTPAddr()+"/metrics", 200)
	for _, want := range []string{
		`alertd_messages_received_total{source="mqtt"} 1`,
		`alertd_rule_matches_total{rule="greenhouse-hot"} 1`,
		`alertd_mail_sent_total 1`,
		`alertd_mail_failed_total{kind="permanent"} 0`,
		`alertd_mail_queue_depth`,
		`alertd_source_up{source="mqtt"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestSecondInstanceOnSameStoreFailsFast(t *testing.T) {
	dir := t.TempDir()
	startApp(t, dir, spoolConfig("", greenhouse))
	cfg, err := Check(filepath.Join(dir, "alertd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = New(cfg, discardLogger())
	if err == nil || !strings.Contains(err.Error(), "another alertd") {
		t.Fatalf("second instance: err = %v, want a clear 'another alertd' error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("second instance took %s to give up", d)
	}
	if info, err := os.Stat(filepath.Join(dir, "alertd.db")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("store file mode %v (err %v), want 0600", info.Mode().Perm(), err)
	}
}

// Home Assistant discovery against a real Mosquitto: the series' retained
// config makes a problem binary_sensor that reads its state topic and
// alertd's online/offline status; a reload that removes the rule removes
// the entity (an empty retained config); a clean stop says offline.
func TestHomeAssistantDiscovery(t *testing.T) {
	broker := mqtttest.Start(t)
	dir := t.TempDir()
	rule := `
  - {name: hot, topic: "gh/+/t", field: temp, above: 30, cooldown: 0s}
`
	first := strings.Replace(spoolConfig(broker.URL(), rule), "mqtt:\n",
		"mqtt:\n  state_topic: alertd/state\n  home_assistant_discovery: true\n", 1)
	app := startApp(t, dir, first)
	if got := mqtttest.Retained(t, broker.URL(), "alertd/state/status", 10*time.Second, func(p string) bool { return p == "online" }); got != "online" {
		t.Fatalf("status %q, want online", got)
	}
	pub := mqtttest.NewPublisher(t, broker.URL())
	pub.Publish(t, "gh/a/t", `{"temp": 35}`)
	raw := mqtttest.Retained(t, broker.URL(), "homeassistant/binary_sensor/+/config", 10*time.Second, func(p string) bool { return p != "" })
	var cfg map[string]any
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("discovery config %q: %v", raw, err)
	}
	if cfg["state_topic"] != "alertd/state/hot/gh/a/t" || cfg["device_class"] != "problem" || cfg["availability_topic"] != "alertd/state/status" ||
		!strings.Contains(fmt.Sprint(cfg["value_template"]), "firing") || cfg["unique_id"] == "" {
		t.Errorf("discovery config %v", cfg)
	}
	configTopic := "homeassistant/binary_sensor/" + fmt.Sprint(cfg["object_id"]) + "/config"

	// Remove the rule: its entity goes.
	writeConfig(t, dir, strings.Replace(first, `name: hot, topic: "gh/+/t"`, `name: other, topic: "x/+/t"`, 1))
	if _, err := app.Reload(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the entity removed", func() bool {
		return mqtttest.Retained(t, broker.URL(), configTopic, 400*time.Millisecond, func(string) bool { return true }) == ""
	})
	app.stop(t)
	if got := mqtttest.Retained(t, broker.URL(), "alertd/state/status", 10*time.Second, func(p string) bool { return p == "offline" }); got != "offline" {
		t.Errorf("status after a clean stop %q, want offline", got)
	}
}
