package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// /healthz is 200 "ok" only when every source is ready, and names each
// one that is not.
func TestHealthzNamesEachSourceThatIsNotReady(t *testing.T) {
	var mqtt, smtp atomic.Bool
	smtp.Store(true)
	srv, err := Listen("127.0.0.1:0", Options{
		Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Health: func() []SourceHealth {
			return []SourceHealth{{"mqtt", mqtt.Load(), "not subscribed yet"}, {"smtp", smtp.Load(), "not serving"}}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	get := func() (int, string) {
		resp, err := http.Get("http://" + srv.Addr() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != 503 || strings.TrimSpace(body) != "mqtt: not subscribed yet" {
		t.Errorf("MQTT away: %d %q", code, body)
	}
	smtp.Store(false)
	if code, body := get(); code != 503 || !strings.Contains(body, "mqtt: not subscribed yet\nsmtp: not serving") {
		t.Errorf("both away: %d %q", code, body)
	}
	mqtt.Store(true)
	smtp.Store(true)
	if code, body := get(); code != 200 || body != "ok\n" {
		t.Errorf("all ready: %d %q", code, body)
	}
}

// /healthz?verbose=1 has the same status as /healthz and a line for every
// source, ready or not, and every check; a failed check does not make it
// unhealthy.
func TestHealthzVerboseListsEverySourceAndCheck(t *testing.T) {
	var mqtt atomic.Bool
	srv, err := Listen("127.0.0.1:0", Options{
		Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Health: func() []SourceHealth {
			return []SourceHealth{{"mqtt", mqtt.Load(), "the broker refused the credentials (bad user name or password)"}, {"http", true, "not serving"}}
		},
		Checks: func() []Check { return []Check{{"smtp preflight", "failed: 127.0.0.1:587 refused the login"}} },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + srv.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	want := "status: not ready\nmqtt: not ready: the broker refused the credentials (bad user name or password)\nhttp: ready\nsmtp preflight: failed: 127.0.0.1:587 refused the login\n"
	if code, body := get("/healthz?verbose=1"); code != 503 || body != want {
		t.Errorf("MQTT away: %d %q, want 503 %q", code, body, want)
	}
	mqtt.Store(true)
	if code, body := get("/healthz?verbose=1"); code != 200 || !strings.HasPrefix(body, "status: ok\nmqtt: ready\nhttp: ready\nsmtp preflight: failed") {
		t.Errorf("all ready: %d %q", code, body)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("plain /healthz: %d %q", code, body)
	}
}
