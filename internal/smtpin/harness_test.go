package smtpin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testHost is alertd's name in tests: mail to any@alertd.test is alertd's own.
const testHost = "alertd.test"

// recSink records what the listener hands over; answer, when set, picks
// the outcome.
type recSink struct {
	mu      sync.Mutex
	mails   []*Mail
	arrived chan struct{} // one send per Accept
	answer  func(ctx context.Context, m *Mail) (Outcome, error)
}

func (r *recSink) Accept(ctx context.Context, m *Mail) (Outcome, error) {
	r.mu.Lock()
	answer := r.answer
	r.mu.Unlock()
	out, err := Outcome{}, error(nil)
	if answer != nil {
		out, err = answer(ctx, m)
	}
	if err == nil && out.Held != HeldRateLimited {
		r.mu.Lock()
		r.mails = append(r.mails, m)
		r.mu.Unlock()
	}
	select {
	case r.arrived <- struct{}{}:
	default:
	}
	return out, err
}

func (r *recSink) Mails() []*Mail {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.mails)
}

// only returns the one mail committed, failing otherwise.
func (r *recSink) only(t *testing.T) *Mail {
	t.Helper()
	ms := r.Mails()
	if len(ms) != 1 {
		t.Fatalf("the Sink got %d mails, want 1", len(ms))
	}
	return ms[0]
}

// logBuf collects the JSON log lines the listener writes.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// refusals returns the "smtp ingress refused" records.
func (l *logBuf) refusals() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.b.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "smtp ingress refused" {
			out = append(out, rec)
		}
	}
	return out
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// counts records Options.Count.
type counts struct {
	mu sync.Mutex
	m  map[Result]int
}

func (c *counts) add(r Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[r]++
}

func (c *counts) get(r Result) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[r]
}

// env is a running listener with its recorders.
type env struct {
	srv    *Server
	addr   string
	sink   *recSink
	log    *logBuf
	counts *counts
	now    time.Time
}

// fixedNow is the injected clock: Received and Date headers are stable.
var fixedNow = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// start runs a listener on 127.0.0.1:0 for the test; fields left zero in
// o get test defaults: relay to ops@example.org and @example.org, sent as
// alertd@example.org.
func start(t *testing.T, o Options) *env {
	t.Helper()
	e := &env{sink: &recSink{arrived: make(chan struct{}, 100)}, log: &logBuf{}, counts: &counts{m: map[Result]int{}}, now: fixedNow}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Hostname == "" {
		o.Hostname = testHost
	}
	if o.RelayTo == nil {
		o.RelayTo = []string{"ops@example.org", "@example.org"}
	}
	if o.From == "" {
		o.From = "alertd@example.org"
	}
	o.Log = slog.New(slog.NewJSONHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o.Count = e.counts.add
	o.Now = func() time.Time { return e.now }
	srv, err := Listen(o, e.sink)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	e.srv, e.addr = srv, srv.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("listener log:\n%s", e.log)
		}
	})
	return e
}

// raw is a client that speaks SMTP by hand, as one does with telnet.
type raw struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dial(t *testing.T, addr string) *raw {
	t.Helper()
	return dialFrom(t, addr, "")
}

// dialFrom connects from a given loopback address ("" for any).
func dialFrom(t *testing.T, addr, local string) *raw {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(15 * time.Second))
	return &raw{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// send writes lines, each ended by CRLF, in one write.
func (c *raw) send(lines ...string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(strings.Join(lines, "\r\n") + "\r\n")); err != nil {
		c.t.Fatalf("send %q: %v", lines, err)
	}
}

// reply reads one whole reply and returns its lines.
func (c *raw) reply() []string {
	c.t.Helper()
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read reply after %q: %v", lines, err)
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return lines
		}
	}
}

// expect reads a reply and checks its last line begins with want.
func (c *raw) expect(want string) string {
	c.t.Helper()
	lines := c.reply()
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, want) {
		c.t.Fatalf("got reply %q, want %q...", lines, want)
	}
	return last
}

// exact reads a one-line reply and checks it byte for byte.
func (c *raw) exact(want string) {
	c.t.Helper()
	if lines := c.reply(); len(lines) != 1 || lines[0] != want {
		c.t.Fatalf("got reply %q, want exactly %q", lines, want)
	}
}

// closed checks the server hung up.
func (c *raw) closed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, err := c.r.ReadString('\n'); err == nil {
		c.t.Fatalf("server still talking: %q", l)
	}
}

// mail sends one mail on an open session and expects want after the dot.
func (c *raw) mail(from string, to []string, data string, want string) string {
	c.t.Helper()
	c.send("MAIL FROM:<" + from + ">")
	c.expect("250")
	for _, r := range to {
		c.send("RCPT TO:<" + r + ">")
		c.expect("250")
	}
	c.send("DATA")
	c.expect("354")
	c.send(data, ".")
	return c.expect(want)
}

// waitConns waits until the listener holds at most n connections.
func waitConns(t *testing.T, e *env, n int) {
	t.Helper()
	l := e.srv.ln
	timeout := time.After(5 * time.Second)
	for {
		l.mu.Lock()
		held := len(l.conns)
		l.mu.Unlock()
		if held <= n {
			return
		}
		select {
		case <-l.changed:
		case <-timeout:
			t.Fatalf("the listener still holds %d connections", held)
		}
	}
}
