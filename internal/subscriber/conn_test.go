package subscriber

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/mqtttest"
)

type seen struct {
	mu sync.Mutex
	n  map[string]int
}

func (s *seen) Handle(ev *event.Event) error {
	s.mu.Lock()
	s.n[string(ev.Payload)]++
	s.mu.Unlock()
	return nil
}

func (s *seen) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.n)
}

// The broker's stream is read through a buffer (conn.go): a burst of
// readings, some larger than the buffer, arrives whole and unchanged over
// each transport alertd dials itself in place of paho.
func TestBurstArrivesWholeOverEachTransport(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB) *mqtttest.Mosquitto
		url   func(*mqtttest.Mosquitto) string
		pub   func(*mqtttest.Mosquitto) string
	}{
		{"tcp", mqtttest.Start, (*mqtttest.Mosquitto).URL, (*mqtttest.Mosquitto).URL},
		{"ssl", mqtttest.StartTLS, (*mqtttest.Mosquitto).TLSURL, (*mqtttest.Mosquitto).PlainURL},
		{"ws", mqtttest.StartWebsockets, (*mqtttest.Mosquitto).WebsocketURL, (*mqtttest.Mosquitto).PlainURL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broker := tc.start(t)
			var tlsc *tls.Config
			if broker.CAFile != "" {
				pem, err := os.ReadFile(broker.CAFile)
				if err != nil {
					t.Fatal(err)
				}
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(pem)
				tlsc = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
			}
			h := &seen{n: map[string]int{}}
			s := New(Options{Broker: tc.url(broker), ClientID: "burst-" + tc.name, QoS: 1, Filters: []string{"s/#"}, TLS: tlsc}, h)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = s.Run(ctx); close(done) }()
			t.Cleanup(func() { cancel(); <-done })
			waitFor(t, "subscribed", s.Ready)

			pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(tc.pub(broker)).SetClientID("burst-pub-" + tc.name).
				SetWriteTimeout(5 * time.Second).SetMaxResumePubInFlight(1000))
			if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publisher: %v", tok.Error())
			}
			defer pub.Disconnect(100)
			const n = 3000
			big := strings.Repeat("x", readBuffer+readBuffer/3) // crosses the buffer's end
			var toks []mqtt.Token
			for i := range n {
				p := fmt.Sprintf(`{"i": %d}`, i)
				if i%500 == 7 {
					p = fmt.Sprintf(`{"i": %d, "pad": %q}`, i, big)
				}
				toks = append(toks, pub.Publish(fmt.Sprintf("s/dev%d", i%37), 1, false, p))
			}
			for _, tok := range toks {
				if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
					t.Fatalf("publish: %v", tok.Error())
				}
			}
			waitFor(t, fmt.Sprintf("%d distinct readings", n), func() bool { return h.distinct() == n })
			h.mu.Lock()
			defer h.mu.Unlock()
			for p := range h.n {
				if !strings.HasPrefix(p, `{"i": `) || !strings.HasSuffix(p, "}") {
					t.Fatalf("a reading arrived changed: %.60q…", p)
				}
			}
		})
	}
}

// quickRecorder finishes "q…" payloads in Quick and sends the rest to
// Handle, which takes its time: the order in which each payload was
// finished is what a topic's series would see.
type quickRecorder struct {
	mu    sync.Mutex
	order []string
	quick int
}

func (h *quickRecorder) Quick(ev *event.Event) bool {
	if !strings.HasPrefix(string(ev.Payload), "q") {
		return false
	}
	h.mu.Lock()
	h.order = append(h.order, string(ev.Payload))
	h.quick++
	h.mu.Unlock()
	return true
}

func (h *quickRecorder) Handle(ev *event.Event) error {
	time.Sleep(30 * time.Millisecond) // a commit
	h.mu.Lock()
	h.order = append(h.order, string(ev.Payload))
	h.mu.Unlock()
	return nil
}

func (h *quickRecorder) done() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.order)
}

// A message finished at once on the receiving goroutine never overtakes
// an earlier one of its topic that is still with a worker; with nothing
// in flight, messages are finished there without a worker.
func TestQuickMessagesKeepTheirTopicsOrder(t *testing.T) {
	broker := mqtttest.Start(t)
	h := &quickRecorder{}
	s := New(Options{Broker: broker.URL(), ClientID: "quick", QoS: 1, Filters: []string{"s/#"}, Workers: 1}, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "subscribed", s.Ready)
	pub := mqtttest.NewPublisher(t, broker.URL())
	want := []string{"q1", "q2", "slow3", "q4", "q5", "slow6", "q7"}
	for _, p := range want {
		pub.Publish(t, "s/a", p)
	}
	waitFor(t, "every message finished", func() bool { return len(h.done()) == len(want) })
	if got := h.done(); !slices.Equal(got, want) {
		t.Fatalf("finished in the order %v, want %v", got, want)
	}
	h.mu.Lock()
	quick := h.quick
	h.mu.Unlock()
	if quick < 2 {
		t.Errorf("%d messages finished at once, want at least q1 and q2 (nothing was in flight)", quick)
	}
}

// What paho is given to read from is the buffered connection, over each
// scheme alertd dials itself (the burst test above would pass unbuffered).
func TestPahoReadsThroughTheBuffer(t *testing.T) {
	plain, secure := mqtttest.Start(t), mqtttest.StartTLS(t)
	pem, err := os.ReadFile(secure.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	for _, tc := range []struct {
		url string
		tls *tls.Config
	}{{plain.URL(), nil}, {secure.TLSURL(), &tls.Config{RootCAs: pool}}} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		o := mqtt.NewClientOptions().SetTLSConfig(tc.tls).SetConnectTimeout(5 * time.Second)
		conn, err := openConnection(u, *o)
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		if _, ok := conn.(*bufferedConn); !ok {
			t.Errorf("%s: paho would read from a %T, not the buffer", tc.url, conn)
		}
		conn.Close()
	}
}

// A shard's worker exits once it has had nothing to do for workerIdle
// (an idle alertd keeps no worker goroutines), and the next message starts
// one again: nothing is lost or reordered across the exits, with messages
// arriving just as a worker gives up.
func TestIdleWorkersExitAndComeBack(t *testing.T) {
	old := workerIdle
	workerIdle = 20 * time.Millisecond
	t.Cleanup(func() { workerIdle = old })
	broker := mqtttest.Start(t)
	h := &quickRecorder{}
	s := New(Options{Broker: broker.URL(), ClientID: "idle", QoS: 1, Filters: []string{"s/#"}, Workers: 2}, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "subscribed", s.Ready)
	running := func() int {
		n := 0
		for i := range s.running {
			if s.running[i].Load() {
				n++
			}
		}
		return n
	}
	if n := running(); n != 0 {
		t.Fatalf("%d workers before any message", n)
	}
	pub := mqtttest.NewPublisher(t, broker.URL())
	var want []string
	for round := range 6 {
		for k := range 3 {
			p := fmt.Sprintf("slow%d-%d", round, k) // each goes to a worker (30 ms each)
			want = append(want, p)
			pub.Publish(t, "s/a", p)
		}
		// Around the moment the worker gives up.
		time.Sleep(workerIdle + time.Duration(round)*5*time.Millisecond)
	}
	waitFor(t, "every message finished", func() bool { return len(h.done()) == len(want) })
	if got := h.done(); !slices.Equal(got, want) {
		t.Fatalf("finished in the order %v, want %v", got, want)
	}
	waitFor(t, "the workers gone once idle", func() bool { return running() == 0 })
}

// The exit of an idle worker against a message counted just before it:
// the worker stays (and keeps running set); with nothing counted it goes,
// and the next message's sender starts a worker.
func TestIdleWorkerStaysForAMessageCountedMeanwhile(t *testing.T) {
	s := New(Options{Broker: "tcp://127.0.0.1:1", ClientID: "retire", Workers: 1}, &quickRecorder{})
	s.running[0].Store(true)
	s.pending[0].Add(1) // a sender counted a message, saw the worker running
	if s.retire(0) {
		t.Fatal("the worker exited with a message counted for it")
	}
	if !s.running[0].Load() {
		t.Fatal("the staying worker is not marked running")
	}
	s.pending[0].Add(-1)
	if !s.retire(0) || s.running[0].Load() {
		t.Fatal("an idle worker with nothing counted did not exit")
	}
	s.pending[0].Add(1)
	s.startWorker(0) // the next message's sender
	if !s.running[0].Load() {
		t.Fatal("no worker started for the next message")
	}
	close(s.done) // let it drain and exit
	s.workers.Wait()
}
