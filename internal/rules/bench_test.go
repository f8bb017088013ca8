package rules

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/event"
)

// engineWith compiles n rules, most on topics the benchmark's stream does
// not touch (as in a large installation), one on the stream's topics.
func engineWith(b *testing.B, n int) *Engine {
	b.Helper()
	var y strings.Builder
	y.WriteString("defaults: {to: [ops@example.org]}\nrules:\n")
	y.WriteString("  - {name: hot, topic: \"fleet/+/telemetry\", field: temp, above: 30}\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&y, "  - {name: r%d, topic: \"site%d/+/dev%d/#\", field: v, above: %d}\n", i, i%97, i, i)
	}
	cfg, err := config.Load(strings.NewReader(y.String()), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	e, err := Compile(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkEvaluate measures one reading against 10, 1,000 and 10,000
// rules: the topic index keeps the cost flat however many rules do not
// match. "miss" is a topic no rule watches; "match" a normal reading of
// the one matching rule.
func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		e := engineWith(b, n)
		miss := &event.Event{Topic: "other/dev42/telemetry", Payload: []byte(`{"temp": 21.5, "hum": 40}`), Received: time.Now()}
		match := &event.Event{Topic: "fleet/dev42/telemetry", Payload: []byte(`{"temp": 21.5, "hum": 40}`), Received: time.Now()}
		var buf [4]Reading
		b.Run(fmt.Sprintf("rules=%d/miss", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Evaluate(miss, buf[:0])
			}
		})
		b.Run(fmt.Sprintf("rules=%d/match", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Evaluate(match, buf[:0])
			}
		})
	}
}
