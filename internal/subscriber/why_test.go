package subscriber

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/mqtttest"
)

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type discard struct{}

func (discard) Handle(*event.Event) error { return nil }

// start runs a subscriber logging into the returned buffer until the test ends.
func start(t *testing.T, o Options) (*Subscriber, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	o.Log = slog.New(slog.NewTextHandler(logs, nil))
	o.QoS, o.Filters = 1, []string{"s/#"}
	if o.ClientID == "" {
		o.ClientID = fmt.Sprintf("alertd-why-%d", time.Now().UnixNano())
	}
	s := New(o, discard{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, logs
}

// A broker that refuses the password: the log says so in plain words once,
// however many times alertd retries, and Why says it for /healthz.
func TestWrongPasswordIsLoggedOnceInPlainWords(t *testing.T) {
	broker := mqtttest.StartWithUsers(t, map[string]string{"alertd": "right-password"})
	s, logs := start(t, Options{Broker: broker.URL(), Username: "alertd", Password: "wrong-password"})
	waitFor(t, "the reason", func() bool { return s.Why() != "" })
	time.Sleep(3500 * time.Millisecond) // three more attempts, one a second
	// Mosquitto answers a wrong password with CONNACK 5, not 4.
	want := "the broker refused the credentials (not authorized); check mqtt.username and mqtt.password, and that the broker lets this user connect"
	if n := strings.Count(logs.String(), "cannot connect to the broker"); n != 1 || !strings.Contains(logs.String(), want) {
		t.Errorf("%d lines about it, want one saying %q:\n%s", n, want, logs.String())
	}
	if got := s.Why(); got != want {
		t.Errorf("Why() = %q, want %q", got, want)
	}
	if s.Ready() || strings.Contains(logs.String(), "wrong-password") {
		t.Errorf("ready %v; log:\n%s", s.Ready(), logs.String())
	}
}

// A broker that is not there, then is: one line while it is away, one when
// it is back, and Why is empty again.
func TestBrokerAwayThenBackIsLoggedOnceEach(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s, logs := start(t, Options{Broker: "tcp://" + addr})
	waitFor(t, "the reason", func() bool { return s.Why() != "" })
	time.Sleep(2500 * time.Millisecond)
	if got := s.Why(); got != "nothing listens at "+addr+" (connection refused); check mqtt.broker and that the broker runs" {
		t.Errorf("Why() = %q", got)
	}
	if n := strings.Count(logs.String(), "cannot connect to the broker"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs.String())
	}
	mqtttest.StartOn(t, addr)
	waitFor(t, "subscribed", s.Ready)
	if s.Why() != "" || strings.Count(logs.String(), "connected to the broker again") != 1 {
		t.Errorf("Why() = %q; log:\n%s", s.Why(), logs.String())
	}
}

// TLS mistakes against real brokers get the hint the SMTP side gives.
func TestTLSMistakesSayWhatToChange(t *testing.T) {
	secure := mqtttest.StartTLS(t)
	plain := mqtttest.Start(t)
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(secure.CAFile)
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, broker string
		tls          *tls.Config
		want         string
	}{
		{"private CA without ca_file", secure.TLSURL(), &tls.Config{ServerName: "127.0.0.1"},
			"the broker's certificate is not trusted; for a private CA set mqtt.tls.ca_file"},
		{"tcp:// to a TLS port", secure.URL(), nil,
			"the broker closed the connection before answering; if " + secure.Addr() + " is a TLS port (usually 8883), use ssl://"},
		{"ssl:// to a plain port", plain.TLSURL(), &tls.Config{ServerName: "127.0.0.1", RootCAs: pool},
			"the broker closed the connection during the TLS handshake; if " + plain.Addr() + " is a plain port, use tcp://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := start(t, Options{Broker: tc.broker, TLS: tc.tls})
			waitFor(t, "the reason", func() bool { return s.Why() != "" })
			if got := s.Why(); got != tc.want {
				t.Errorf("Why() = %q, want %q\nlog:\n%s", got, tc.want, logs.String())
			}
		})
	}
}

// A name that does not resolve (a DNS answer, not a timeout) is the
// configuration's fault.
func TestExplainDNS(t *testing.T) {
	got := explain("tcp://nosuch.invalid:1883", fmt.Errorf("network Error : %w", &net.OpError{Op: "dial", Net: "tcp",
		Err: &net.DNSError{Err: "no such host", Name: "nosuch.invalid", IsNotFound: true}}))
	if want := `the broker's name "nosuch.invalid" does not resolve (DNS); check mqtt.broker and this machine's DNS`; got.why != want || !got.config {
		t.Errorf("explain = %+v, want %q", got, want)
	}
}
