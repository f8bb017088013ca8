package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alertd/alertd/internal/cluster/natstest"
)

// connect opens a NATS connection to the whole cluster, reconnecting
// forever as alertd would, closed when the test ends.
func connect(t testing.TB, c *natstest.Cluster) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// instance is one Ingest running in the test, with its own connection.
type instance struct {
	*Ingest
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

// startInstance runs an Ingest named id on its own NATS connection.
// setup, if given, changes the Ingest before it runs.
func startInstance(t *testing.T, c *natstest.Cluster, cfg Config, id string, handle Handler, setup ...func(*Ingest)) *instance {
	t.Helper()
	nc, js := connect(t, c)
	cfg.JS, cfg.Instance = js, id
	if cfg.Logger == nil {
		cfg.Logger, _ = testLogger(t)
	}
	in, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(in)
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := &instance{Ingest: in, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { x.done <- in.Run(ctx, handle) }()
	t.Cleanup(func() { x.stop(t) })
	return x
}

// stop cancels the instance and waits for Run; it is idempotent.
func (x *instance) stop(t *testing.T) {
	t.Helper()
	x.cancel()
	select {
	case err, ok := <-x.done:
		if ok {
			close(x.done)
			if err != nil {
				t.Logf("%s: Run: %v", x.Instance(), err)
			}
		}
	case <-time.After(10 * time.Second):
		t.Errorf("%s: Run did not return", x.Instance())
	}
}

// eventually polls cond every 10ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// balanced reports whether the instances together own every partition
// once, each within one of the others.
func balanced(n int, xs ...*instance) bool {
	seen := map[int]bool{}
	lo, hi := n, 0
	for _, x := range xs {
		o := x.Owned()
		lo, hi = min(lo, len(o)), max(hi, len(o))
		for _, p := range o {
			if seen[p] {
				return false
			}
			seen[p] = true
		}
	}
	return len(seen) == n && hi-lo <= 1
}

func owned(xs ...*instance) string {
	var b strings.Builder
	for _, x := range xs {
		fmt.Fprintf(&b, "%s=%v ", x.Instance(), x.Owned())
	}
	return b.String()
}

// ledger records what every handler saw and acked, across instances.
type ledger struct {
	mu        sync.Mutex
	partition map[string]map[int]bool // topic → partitions it arrived in
	acked     map[string]string       // payload → instance that acked it
	seen      map[string]int          // payload → deliveries handed to a handler
}

func newLedger() *ledger {
	return &ledger{partition: map[string]map[int]bool{}, acked: map[string]string{}, seen: map[string]int{}}
}

// handler records and acks every reading, unless hold says to keep it
// unacknowledged (a crash between handling and commit).
func (l *ledger) handler(id string, hold func(Reading) bool) Handler {
	return func(ctx context.Context, r Reading) error {
		l.mu.Lock()
		if l.partition[r.Topic] == nil {
			l.partition[r.Topic] = map[int]bool{}
		}
		l.partition[r.Topic][r.Partition] = true
		l.seen[string(r.Payload)]++
		l.mu.Unlock()
		if hold != nil && hold(r) {
			return nil
		}
		if err := r.Ack(); err != nil {
			return err
		}
		l.mu.Lock()
		l.acked[string(r.Payload)] = id
		l.mu.Unlock()
		return nil
	}
}

// missing lists the payloads not acked yet, at most a few.
func (l *ledger) missing(payloads []string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, p := range payloads {
		if _, ok := l.acked[p]; !ok {
			out = append(out, p)
		}
	}
	return out
}

func (l *ledger) seenCount(p string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[p]
}

func (l *ledger) ackedBy(p string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked[p]
}

// device is an MQTT client as a sensor would be: QoS 1, reconnecting.
type device struct {
	c mqtt.Client
}

func newDevice(t *testing.T, id string, brokers ...string) *device {
	t.Helper()
	// ConnectRetry: a node that has just restarted accepts MQTT
	// connections only once its $MQTT streams are reachable.
	o := mqtt.NewClientOptions().SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(true).SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond)
	for _, b := range brokers {
		o.AddBroker(b)
	}
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("device %s: connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return &device{c: c}
}

// publish sends every (topic, payload) at QoS 1 and waits for the PUBACKs.
func (d *device) publish(msgs [][2]string) error {
	toks := make([]mqtt.Token, 0, len(msgs))
	for _, m := range msgs {
		toks = append(toks, d.c.Publish(m[0], 1, false, []byte(m[1])))
	}
	for k, tok := range toks {
		if !tok.WaitTimeout(20 * time.Second) {
			return fmt.Errorf("publish %s: no PUBACK in 20s", msgs[k][0])
		}
		if err := tok.Error(); err != nil {
			return fmt.Errorf("publish %s: %w", msgs[k][0], err)
		}
	}
	return nil
}

func (d *device) mustPublish(t *testing.T, msgs [][2]string) {
	t.Helper()
	if err := d.publish(msgs); err != nil {
		t.Fatal(err)
	}
}

// readings makes one reading per topic, payloads unique to batch.
func readings(batch string, topics []string) (msgs [][2]string, payloads []string) {
	for _, topic := range topics {
		p := fmt.Sprintf(`{"batch":%q,"topic":%q}`, batch, topic)
		msgs = append(msgs, [2]string{topic, p})
		payloads = append(payloads, p)
	}
	return msgs, payloads
}

func fleetTopics(n int) []string {
	out := make([]string, n)
	for k := range out {
		out[k] = fmt.Sprintf("fleet/dev%d/telemetry", k)
	}
	return out
}

// recorder is a slog handler that keeps every record's message and
// attributes for assertions and passes them on to t.Log.
type recorder struct {
	t     *testing.T
	mu    *sync.Mutex
	lines *[]string
	attrs string
}

func testLogger(t *testing.T) (*slog.Logger, *recorder) {
	r := &recorder{t: t, mu: new(sync.Mutex), lines: new([]string)}
	return slog.New(r), r
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s%s", rec.Time.Format("15:04:05.000"), rec.Level, rec.Message, r.attrs)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.mu.Lock()
	*r.lines = append(*r.lines, b.String())
	r.mu.Unlock()
	if rec.Level >= slog.LevelInfo {
		r.t.Log(b.String())
	}
	return nil
}
func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *r
	for _, a := range as {
		c.attrs += fmt.Sprintf(" %s=%v", a.Key, a.Value)
	}
	return &c
}
func (r *recorder) WithGroup(string) slog.Handler { return r }

func (r *recorder) has(substrs ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(*r.lines, func(l string) bool {
		for _, s := range substrs {
			if !strings.Contains(l, s) {
				return false
			}
		}
		return true
	})
}

func (c Config) withDefaultsT(t *testing.T) Config {
	t.Helper()
	c.JS = noJS{}
	d, err := c.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// noJS stands in for a JetStream context where only defaults are read.
type noJS struct{ jetstream.JetStream }
