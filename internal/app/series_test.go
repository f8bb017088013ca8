package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	dto "github.com/prometheus/client_model/go"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

// gathered reads one sample of the app's registry: name{rule="..."}.
func (r *running) gathered(t *testing.T, name, rule string) float64 {
	t.Helper()
	mfs, err := r.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelIs(m, "rule", rule) {
				if m.GetGauge() != nil {
					return m.GetGauge().GetValue()
				}
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no sample %s{rule=%q}", name, rule)
	return 0
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// publishMany publishes payload on n topics made by topic(i), at QoS 1,
// with a bounded window of unacknowledged messages.
func publishMany(t *testing.T, url string, n int, topic func(int) string, payload string) {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("test-flood-%d", time.Now().UnixNano())).
		SetConnectTimeout(5 * time.Second).SetWriteTimeout(10 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("flood publisher: %v", tok.Error())
	}
	defer c.Disconnect(100)
	window := make([]mqtt.Token, 0, 500)
	flush := func() {
		for _, tok := range window {
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Fatalf("flood publish: %v", tok.Error())
			}
		}
		window = window[:0]
	}
	for i := range n {
		window = append(window, c.Publish(topic(i), 1, false, payload))
		if len(window) == cap(window) {
			flush()
		}
	}
	flush()
}

// A flood of junk topics on a silence rule's filter: a device seen before
// it and a device new after it still alert at their first breach, the
// silence series of the device seen before survives, one WARN says what
// happened, and the metrics count the evictions.
//
// The default run floods 15,000 topics against max_series 1,000 (a slice
// that exceeds the budget fifteen times); ALERTD_TEST_FLOOD=full floods
// 150,000 against the default limits, as in the report.
func TestAFloodOfJunkTopicsDoesNotBlindAlertd(t *testing.T) {
	junk, budget, silentKeys := 15_000, 1_000, ", max_series: 1000"
	if os.Getenv("ALERTD_TEST_FLOOD") == "full" {
		junk, budget, silentKeys = 150_000, config.DefaultRuleMaxSeries, ""
	}
	broker := mqtttest.Start(t)
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig(broker.URL(), `
  - {name: hot, topic: "sensors/+/telemetry", field: temp, above: 30, cooldown: 0s, subject: "hot {{.Device}}"}
  - {name: silent, topic: "sensors/+/telemetry", silent_for: 1h`+silentKeys+`}
`))
	pub := mqtttest.NewPublisher(t, broker.URL())
	for range 3 {
		pub.Publish(t, "sensors/old/telemetry", `{"temp": 20}`)
	}
	start := time.Now()
	publishMany(t, broker.URL(), junk, func(i int) string { return fmt.Sprintf("sensors/junk%06d/telemetry", i) }, `{"temp": 20}`)
	waitFor(t, 10*time.Minute, "the flood handled", func() bool { return app.Handled() >= uint64(3+junk) })
	t.Logf("%d junk topics published and handled in %s", junk, time.Since(start).Round(time.Millisecond))

	breach := time.Now()
	pub.Publish(t, "sensors/old/telemetry", `{"temp": 35}`)
	pub.Publish(t, "sensors/new/telemetry", `{"temp": 36}`)
	mails := waitSpooled(t, filepath.Join(dir, "spool"), 2)
	t.Logf("both first breaches mailed %s after publishing", time.Since(breach).Round(time.Millisecond))
	got := map[string]bool{}
	for _, m := range mails {
		got[m.Subject] = true
	}
	if !got["hot old"] || !got["hot new"] {
		t.Errorf("mails %v, want the breaches of old and new", got)
	}

	if s, ok := app.tracker.Lookup("silent", "sensors/old/telemetry"); !ok || !s.LastSeen.After(breach) {
		t.Errorf("the silence series of the device seen before the flood: tracked %v, last seen %v", ok, s.LastSeen)
	}
	created := 1 + junk + 1 // old, the junk, new
	if n := app.gathered(t, "alertd_series", "silent"); n != float64(budget) {
		t.Errorf("alertd_series{rule=silent} = %v, want the budget %d", n, budget)
	}
	if n := app.gathered(t, "alertd_series_evicted_total", "silent"); n != float64(created-budget) {
		t.Errorf("alertd_series_evicted_total{rule=silent} = %v, want %d", n, created-budget)
	}
	if n := app.gathered(t, "alertd_series_evicted_total", "hot"); n != 0 {
		t.Errorf("hot lost %v series to the flood", n)
	}
	var dropped dto.Metric
	_ = app.Metrics().MessagesDropped.WithLabelValues("too_many_series").Write(&dropped)
	if n := dropped.GetCounter().GetValue(); n != 0 {
		t.Errorf("%v readings dropped: junk topics only ever evict junk", n)
	}
	var warns []string
	for _, line := range strings.Split(app.logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "series limit reached") {
			warns = append(warns, line)
		}
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "rule=silent") || !strings.Contains(warns[0], "filter=sensors/+/telemetry") ||
		!strings.Contains(warns[0], fmt.Sprintf("max=%d", budget)) {
		t.Errorf("limit warnings:\n%s\nwant one for rule silent with its filter and limit", strings.Join(warns, "\n"))
	}
}

// Shutdown with 100,000 series whose last-seen times changed since the
// last checkpoint: Run returns in bounded time (the helper fails the test
// past 10 s) and every last-seen time is in the store. Under the race
// detector, whose writes are several times slower, with 30,000: the 5 s
// budget is the product's, and 100,000 took 4–5 s of it on a busy 2-core
// machine.
func TestShutdownSaves100000LastSeenTimes(t *testing.T) {
	n := 100_000
	if raceEnabled {
		n = 30_000
	}
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig("", `
  - {name: silent, topic: "hb/+", silent_for: 1h, max_series: 100000}
`))
	at := time.Now().Truncate(time.Millisecond)
	var wg sync.WaitGroup
	const workers = 4
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if err := app.eng.Handle(&event.Event{Source: "mqtt", Topic: fmt.Sprintf("hb/%06d", i), Payload: []byte("up"), Received: at}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if d := app.tracker.Dirty(); d < n/2 {
		t.Fatalf("only %d series dirty before the shutdown: a periodic checkpoint ran; the test proves nothing", d)
	}
	dirty := app.tracker.Dirty()
	stopped := time.Now()
	app.stop(t)
	t.Logf("Run returned %s after cancel with %d dirty series", time.Since(stopped).Round(time.Millisecond), dirty)
	if strings.Contains(app.logs.String(), "not all saved") {
		t.Errorf("the shutdown budget ran out:\n%s", app.logs.String())
	}

	db, _, err := store.Open(filepath.Join(dir, "alertd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg, err := Check(filepath.Join(dir, "alertd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	engine, err := rules.Compile(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := alerts.New(alerts.Options{Start: time.Now(), Budgets: seriesBudgets(cfg), MaxSeries: cfg.Limits.MaxSeries})
	if got, err := tr.Load(db, engine); err != nil || got != n {
		t.Fatalf("restored %d series (%v), want %d", got, err, n)
	}
	for _, i := range []int{0, 4711, n - 1} {
		if s, ok := tr.Lookup("silent", fmt.Sprintf("hb/%06d", i)); !ok || !s.LastSeen.Equal(at) {
			t.Errorf("hb/%06d restored %v, last seen %v; want %v", i, ok, s.LastSeen, at)
		}
	}
}
