package subscriber

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
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
