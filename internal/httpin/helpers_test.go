package httpin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/event"
)

const testToken = "s3cret-device-token"

var testNow = time.Date(2025, 7, 1, 12, 0, 0, 0, time.UTC)

// recordingSink records what the listener commits. err, when set, is
// returned by every call; block, when set, holds each call until closed,
// after telling entered.
type recordingSink struct {
	mu      sync.Mutex
	events  []*event.Event
	mails   []*Mail
	err     error
	errAt   int // with err: fail only the errAt-th call (1-based); 0: all
	calls   int
	outcome Outcome
	block   chan struct{}
	entered chan struct{}
}

func (f *recordingSink) Event(ctx context.Context, ev *event.Event) (string, error) {
	if err := f.enter(ctx); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, ev)
	return fmt.Sprintf("ev-%d", len(f.events)), nil
}

func (f *recordingSink) Mail(ctx context.Context, m *Mail) (Outcome, error) {
	if err := f.enter(ctx); err != nil {
		return Outcome{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mails = append(f.mails, m)
	out := f.outcome
	if out.ID == "" {
		out.ID = fmt.Sprintf("mail-%d", len(f.mails))
	}
	return out, nil
}

func (f *recordingSink) enter(ctx context.Context) error {
	if f.block != nil {
		f.entered <- struct{}{}
		select {
		case <-f.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil && (f.errAt == 0 || f.errAt == f.calls) {
		return f.err
	}
	return nil
}

func (f *recordingSink) recorded() ([]*event.Event, []*Mail) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*event.Event(nil), f.events...), append([]*Mail(nil), f.mails...)
}

// results counts the Count calls by result.
type results struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *results) count(result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[result]++
}

func (r *results) get(result string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[result]
}

// lockedBuffer collects log output written from the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type testServer struct {
	*Server
	url     string // http://127.0.0.1:port
	sink    *recordingSink
	results *results
	logs    *lockedBuffer
}

// start runs a listener on 127.0.0.1:0 with test defaults for whatever
// opts leaves unset, stopped at cleanup.
func start(t *testing.T, opts Options, sink *recordingSink) *testServer {
	t.Helper()
	if sink == nil {
		sink = &recordingSink{}
	}
	ts := &testServer{sink: sink, results: &results{n: map[string]int{}}, logs: &lockedBuffer{}}
	opts.Listen = "127.0.0.1:0"
	if opts.Tokens == nil {
		opts.Tokens = []string{testToken, "second-token"}
	}
	if opts.RelayTo == nil {
		opts.RelayTo = []string{"ops@example.org", "@example.net"}
	}
	opts.Log = slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Count = ts.results.count
	opts.Now = func() time.Time { return testNow }
	srv, err := Listen(opts, sink)
	if err != nil {
		t.Fatal(err)
	}
	ts.Server, ts.url = srv, "http://"+srv.Addr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ts
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// post sends body with the test token as a bearer token.
func (ts *testServer) post(t *testing.T, path, contentType, body string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	return do(t, req)
}

func do(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		t.Fatalf("%s %s: answer %d is not JSON: %q", req.Method, req.URL.Path, resp.StatusCode, raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	return a
}

// wantError checks a refusal: its status and that its JSON error says
// something containing msg.
func (a answer) wantError(t *testing.T, status int, msg string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status = %d (%s), want %d", a.status, a.raw, status)
	}
	e, _ := a.body["error"].(string)
	if !strings.Contains(e, msg) || len(a.body) != 1 {
		t.Errorf("body = %s, want {\"error\": ...%q...}", a.raw, msg)
	}
}

func (a answer) wantAccepted(t *testing.T) {
	t.Helper()
	if a.status != http.StatusAccepted {
		t.Fatalf("status = %d (%s), want 202", a.status, a.raw)
	}
	if id, _ := a.body["id"].(string); id == "" {
		t.Errorf("body = %s, want an id", a.raw)
	}
}
