package app

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/alertd/alertd/internal/mqtttest"
)

// hostilePayload returns one of the payloads a broken or malicious device
// sends: huge, deeply nested, invalid UTF-8, binary, NaN/Inf, CR/LF.
func hostilePayload(r *rand.Rand, i int) string {
	switch i % 10 {
	case 0:
		return strings.Repeat("x", 100<<10+r.IntN(1<<10)) // over the 64 KiB limit
	case 1:
		d := 33 + r.IntN(2000)
		return strings.Repeat(`{"a":`, d) + "1" + strings.Repeat("}", d)
	case 2:
		b := make([]byte, 64+r.IntN(512))
		for j := range b {
			b[j] = byte(r.UintN(256))
		}
		return string(b)
	case 3:
		return `{"temp": NaN}`
	case 4:
		return `{"temp": 1e400}`
	case 5:
		return `{"temp": "31\r\nBcc: victim@example.com"}`
	case 6:
		return "\xff\xfe{\"temp\": 99}"
	case 7:
		return `{"temp": [` + strings.Repeat("1,", 5000) + `1]}`
	case 8:
		return `{"temp": 35, "x": "` + strings.Repeat("é", 40000) + `"}` // valid, but over the limit
	default:
		return `{"temp":` // truncated
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// Thousands of hostile payloads on many topics: nothing crashes, memory
// stays bounded, and an alert raised afterwards still arrives.
func TestTortureHostilePayloads(t *testing.T) {
	const n = 3000
	broker := mqtttest.Start(t)
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig(broker.URL(), `
  - {name: hot, topic: "s/+/t", field: temp, above: 30}
  - {name: raw, topic: "s/+/t", equals: "PANIC"}
  - {name: quiet, topic: "s/+/t", silent_for: 1h}
`))
	app.logs.mu.Lock()
	app.logs.discard = true
	app.logs.mu.Unlock() // debug logs of 3000 invalid payloads are not the point
	pub := mqtttest.NewPublisher(t, broker.URL())
	r := rand.New(rand.NewPCG(1, 2))
	before := heapAfterGC()
	for i := range n {
		pub.Publish(t, fmt.Sprintf("s/dev%d/t", i%500), hostilePayload(r, i))
	}
	waitFor(t, 60*time.Second, "every hostile payload processed", func() bool { return app.counter("received") == n })
	grown := int64(heapAfterGC()) - int64(before)
	t.Logf("heap grew by %d KiB after %d hostile payloads on 500 topics", grown/1024, n)
	if grown > 32<<20 {
		t.Errorf("heap grew by %d MiB: memory is not bounded", grown>>20)
	}
	if got := app.counter("invalid", "hot"); got < n*0.8 {
		t.Errorf("only %v payloads counted invalid for rule hot", got)
	}
	// The payload with temp 35 inside an over-long document is refused
	// whole: no mail so far.
	if mails := spooled(t, filepath.Join(dir, "spool")); len(mails) != 0 {
		t.Errorf("hostile payloads produced %d mails", len(mails))
	}
	pub.Publish(t, "s/after/t", `{"temp": 31}`)
	m := waitSpooled(t, filepath.Join(dir, "spool"), 1)[0]
	if m.Subject != "[warning] hot: after temp=31" {
		t.Errorf("the alert after the torture: %q", m.Subject)
	}
}

// One reading on a topic far longer than any device's (MQTT allows 64 KiB;
// bbolt keys stop at 32 KiB) is dropped and counted, and every alert after
// it still arrives.
func TestLongTopicIsDroppedNotRetriedForever(t *testing.T) {
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig("", `
  - {name: hot, topic: "sensors/#", field: temp, above: 30, rate_limit: 100/h}
  - {name: quiet, topic: "#", silent_for: 1h}
`))
	pub := mqtttest.NewPublisher(t, app.BrokerURL())
	pub.Publish(t, "sensors/"+strings.Repeat("x", 33000), `{"temp": 31.5}`)
	for i := range 40 {
		pub.Publish(t, fmt.Sprintf("sensors/dev%02d/t", i), `{"temp": 31.5}`)
	}
	mails := waitSpooled(t, filepath.Join(dir, "spool"), 40)
	if len(mails) != 40 {
		t.Errorf("%d mails, want the 40 devices' alerts", len(mails))
	}
	if got := testutil.ToFloat64(app.Metrics().MessagesDropped.WithLabelValues("topic_too_long")); got != 1 {
		t.Errorf("dropped{topic_too_long} = %v, want 1", got)
	}
}
