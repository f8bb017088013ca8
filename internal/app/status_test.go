package app

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/silence"
)

const statusRules = `
  - name: greenhouse-hot
    topic: "sensors/+/telemetry"
    field: temp
    above: 30
    cooldown: 30m
    severity: critical
  - name: cellar-damp
    topic: "cellar/+/humidity"
    field: hum
    above: 80
    for: 1h
`

// firing finds rule's alert on series in st.
func firing(st httpapi.Status, rule, series string) (httpapi.StatusAlert, bool) {
	for _, a := range st.Firing {
		if a.Rule == rule && a.Series == series {
			return a, true
		}
	}
	return httpapi.StatusAlert{}, false
}

// The status follows the alerts: a firing alert appears with its value
// and mail, a pending one with when it fires, one held back by the
// cooldown with when it is tried again, and a resolved one disappears.
func TestStatusFollowsTheAlerts(t *testing.T) {
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig("", statusRules))
	pub := mqtttest.NewPublisher(t, app.BrokerURL())

	pub.Publish(t, "sensors/greenhouse/telemetry", `{"temp": 31.5}`)
	pub.Publish(t, "cellar/north/humidity", `{"hum": 91}`)
	waitSpooled(t, filepath.Join(dir, "spool"), 1)
	waitFor(t, 10*time.Second, "the pending alert", func() bool { return len(app.Status().Pending) == 1 })
	st := app.Status()
	a, ok := firing(st, "greenhouse-hot", "sensors/greenhouse/telemetry")
	if !ok || a.Value != "31.5" || a.Threshold != "30" || a.Severity != "critical" || a.LastMail.IsZero() || a.Held != "" || a.Since.IsZero() {
		t.Fatalf("firing %+v, want greenhouse-hot at 31.5 over 30, its mail sent", st.Firing)
	}
	if p := st.Pending[0]; p.Series != "cellar/north/humidity" || p.Value != "91" || !p.FiresAt.Equal(p.Since.Add(time.Hour)) {
		t.Errorf("pending %+v, want cellar/north/humidity firing an hour after it began", p)
	}
	if len(st.Sources) != 1 || st.Sources[0].Name != "mqtt" || !st.Sources[0].Ready {
		t.Errorf("sources %+v, want mqtt ready", st.Sources)
	}
	if st.Config.Rules != 2 || st.Config.File != filepath.Join(dir, "alertd.yaml") || st.Config.LoadedAt.IsZero() || !st.Config.LastReloadOK {
		t.Errorf("config %+v", st.Config)
	}

	pub.Publish(t, "sensors/greenhouse/telemetry", `{"temp": 20}`)
	waitFor(t, 10*time.Second, "the resolved alert gone", func() bool {
		_, ok := firing(app.Status(), "greenhouse-hot", "sensors/greenhouse/telemetry")
		return !ok
	})

	// Back within the cooldown: firing, its first mail held back.
	pub.Publish(t, "sensors/greenhouse/telemetry", `{"temp": 33}`)
	waitFor(t, 10*time.Second, "the flap held back", func() bool { return app.counter("suppressed", "greenhouse-hot", "cooldown") == 1 })
	st = app.Status()
	if a, ok := firing(st, "greenhouse-hot", "sensors/greenhouse/telemetry"); !ok || a.Held != "cooldown" || a.RetryAt.Before(st.At.Add(29*time.Minute)) || !a.LastMail.IsZero() {
		t.Errorf("after the flap: %+v, want it firing, held by the cooldown for about 30m", a)
	}
	if held := st.HeldBack(); len(held) != 1 {
		t.Errorf("held back %+v, want the flap", held)
	}
	if len(st.Suppressed) != 1 || st.Suppressed[0] != (httpapi.StatusSuppressed{Rule: "greenhouse-hot", Reason: "cooldown", Count: 1}) {
		t.Errorf("suppressed %+v", st.Suppressed)
	}
}

// A silence shows with its expiry, and a first mail it holds says so.
func TestStatusShowsSilencesAndWhatTheyHold(t *testing.T) {
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig("", statusRules))
	until := time.Now().Add(2 * time.Hour)
	if _, err := app.silences.Add(silence.Silence{Rule: "greenhouse-hot", Comment: "door open", Created: time.Now(), Expires: until}); err != nil {
		t.Fatal(err)
	}
	mqtttest.NewPublisher(t, app.BrokerURL()).Publish(t, "sensors/shed/telemetry", `{"temp": 40}`)
	waitFor(t, 10*time.Second, "the silenced alert", func() bool { return len(app.Status().Firing) == 1 })
	st := app.Status()
	if a := st.Firing[0]; a.Held != "silenced" || !a.RetryAt.Equal(until) {
		t.Errorf("firing %+v, want it held by the silence until %v", a, until)
	}
	if len(st.Silences) != 1 || st.Silences[0].Comment != "door open" || !st.Silences[0].Expires.Equal(until) {
		t.Errorf("silences %+v", st.Silences)
	}
}

// A topic is whatever a device published: on the page it is text, in the
// JSON a string.
func TestStatusPageEscapesAHostileTopic(t *testing.T) {
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig("", statusRules))
	topic := "sensors/<script>alert(1)<\\script>/telemetry"
	mqtttest.NewPublisher(t, app.BrokerURL()).Publish(t, topic, `{"temp": 40}`)
	waitFor(t, 10*time.Second, "the alert", func() bool { return len(app.Status().Firing) == 1 })

	page := httpGet(t, "http://"+app.HTTPAddr()+"/", 200)
	if strings.Contains(page, "<script>alert") {
		t.Fatalf("the topic reached the page as markup:\n%s", page)
	}
	if !strings.Contains(page, `sensors/&lt;script&gt;alert(1)&lt;\script&gt;/telemetry`) {
		t.Errorf("the page does not show the topic as text")
	}
	var st httpapi.Status
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+app.HTTPAddr()+"/api/v1/status", 200)), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Firing) != 1 || st.Firing[0].Series != topic {
		t.Errorf("JSON firing %+v, want the topic as it was", st.Firing)
	}
}
