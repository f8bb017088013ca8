package app

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// logBuffer collects a test app's log lines (to assert that no secret
// leaks) and echoes them with t.Log when the test fails.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	discard bool // drop debug lines (a test that floods the log)
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.discard && bytes.Contains(p, []byte("level=DEBUG")) {
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running is an app started by a test.
type running struct {
	*App
	dir    string
	logs   *logBuffer
	cancel context.CancelFunc
	done   chan error
}

// writeConfig writes yaml into dir/alertd.yaml; "${DIR}" in it becomes dir.
func writeConfig(t *testing.T, dir, yaml string) string {
	t.Helper()
	path := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(yaml, "${DIR}", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startApp loads the config from dir and runs alertd until the test ends
// (or stop is called), waiting until it is subscribed.
func startApp(t *testing.T, dir, yaml string) *running {
	t.Helper()
	cfg, err := Check(writeConfig(t, dir, yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(cfg, log)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{App: a, dir: dir, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		r.stop(t)
		if t.Failed() {
			t.Logf("alertd log:\n%s", logs.String())
		}
	})
	select {
	case <-a.Started():
	case err := <-r.done:
		t.Fatalf("alertd stopped at start: %v\n%s", err, logs.String())
	}
	waitFor(t, 15*time.Second, "alertd subscribed", a.Ready)
	return r
}

// stop ends the app as SIGTERM would and checks that it stops cleanly.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("alertd stopped with error: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("alertd did not stop within 10s")
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counter reads a metric's value.
func (r *running) counter(name string, labels ...string) float64 {
	m := r.Metrics()
	switch name {
	case "suppressed":
		return testutil.ToFloat64(m.Suppressed.WithLabelValues(labels...))
	case "invalid": // rule, summed over the reasons
		sum := 0.0
		for _, reason := range []string{"too_large", "bad_utf8", "not_json", "too_deep", "not_object", "field_not_value", "not_number", "not_finite", "expression"} {
			sum += testutil.ToFloat64(m.PayloadInvalid.WithLabelValues(labels[0], reason))
		}
		return sum
	case "field_missing":
		return testutil.ToFloat64(m.PayloadFieldMissing.WithLabelValues(labels...))
	case "matches":
		return testutil.ToFloat64(m.RuleMatches.WithLabelValues(labels...))
	case "received":
		return testutil.ToFloat64(m.MessagesReceived.WithLabelValues("mqtt"))
	case "sent":
		return testutil.ToFloat64(m.MailSent)
	case "failed":
		return testutil.ToFloat64(m.MailFailed.WithLabelValues(labels...))
	case "dead":
		return testutil.ToFloat64(m.MailDead)
	case "alertd_ingress_smtp_total":
		return testutil.ToFloat64(m.IngressSMTP.WithLabelValues(labels...))
	}
	panic("unknown metric " + name)
}

// received is one parsed mail, as a mail client would show it.
type received struct {
	Header  mail.Header
	Subject string
	Body    string // the text part before the footer ("-- " line)
	Footer  string // alertd's footer: host, status link, silence command
	Text    mail.InlineHeader
	HTML    string // the HTML part, "" when none
	Raw     []byte
}

func parseMail(t *testing.T, raw []byte) received {
	t.Helper()
	r, err := mail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse mail: %v\n%s", err, raw)
	}
	subject, err := r.Header.Subject()
	if err != nil {
		t.Fatalf("decode subject: %v", err)
	}
	p, err := r.NextPart()
	if err != nil {
		t.Fatalf("mail body: %v", err)
	}
	body, _ := io.ReadAll(p.Body)
	m := received{Header: r.Header, Subject: subject, Raw: raw}
	if h, ok := p.Header.(*mail.InlineHeader); ok {
		m.Text = *h
	}
	m.Body, m.Footer, _ = strings.Cut(string(body), "\r\n-- \r\n")
	if p, err := r.NextPart(); err == nil {
		html, _ := io.ReadAll(p.Body)
		m.HTML = string(html)
	}
	return m
}

// spooled returns the mails in the spool directory, oldest first.
func spooled(t *testing.T, dir string) []received {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
	sort.Strings(files)
	var out []received
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, parseMail(t, raw))
	}
	return out
}

func waitSpooled(t *testing.T, dir string, n int) []received {
	t.Helper()
	waitFor(t, 15*time.Second, "mail in the spool", func() bool { return len(spooled(t, dir)) >= n })
	return spooled(t, dir)
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func httpGet(t *testing.T, url string, wantStatus int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: status %d, want %d: %s", url, resp.StatusCode, wantStatus, body)
	}
	return string(body)
}
