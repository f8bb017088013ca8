package httpin

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestListenOptions(t *testing.T) {
	base := func() Options {
		return Options{Listen: "127.0.0.1:0", Tokens: []string{"t"}, RelayTo: []string{"@example.org"}}
	}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		err  string
	}{
		{"no tokens", func(o *Options) { o.Tokens = nil }, "ingress.http.tokens: at least one token"},
		{"empty token", func(o *Options) { o.Tokens = []string{"a", ""} }, "token 2 is empty"},
		{"token with a newline", func(o *Options) { o.Tokens = []string{"abc\n"} }, "spaces or control"},
		{"bad relay_to", func(o *Options) { o.RelayTo = []string{"@"} }, `ingress.relay_to: entry 1 ("@")`},
		{"negative body limit", func(o *Options) { o.MaxBodyBytes = -1 }, "max_body_bytes"},
		{"bad address", func(o *Options) { o.Listen = "127.0.0.1:99999" }, "ingress.http: listen on 127.0.0.1:99999"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base()
			tc.edit(&o)
			if _, err := Listen(o, &recordingSink{}); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Listen: %v, want an error containing %q", err, tc.err)
			}
		})
	}
	if _, err := Listen(base(), nil); err == nil {
		t.Error("Listen without a sink succeeded")
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(Options{Listen: ln.Addr().String(), Tokens: []string{"t"}}, &recordingSink{})
	if err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Errorf("Listen on a port in use: %v", err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	s, err := Listen(Options{Listen: "127.0.0.1:0", Tokens: []string{"t"}}, &recordingSink{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if err := s.Run(context.Background()); err != nil {
		t.Errorf("Run after Close: %v, want nil", err)
	}
	if _, err := net.Dial("tcp", s.Addr()); err == nil {
		t.Error("the port still accepts connections")
	}
}

// Stopping alertd lets a commit in flight end and answer.
func TestRunLetsCommitsFinish(t *testing.T) {
	sink := &recordingSink{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	s, err := Listen(Options{Listen: "127.0.0.1:0", Tokens: []string{testToken}}, sink)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	ts := &testServer{Server: s, url: "http://" + s.Addr(), sink: sink}
	answered := make(chan answer, 1)
	go func() { answered <- ts.post(t, "/v1/events/a", "text/plain", "1") }()
	<-sink.entered
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) with a commit in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(sink.block)
	(<-answered).wantAccepted(t)
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := http.Get(ts.url + "/v1/events/a"); err == nil {
		t.Error("the listener still answers after Run returned")
	}
}
