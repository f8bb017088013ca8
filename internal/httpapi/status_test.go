package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/alertd/alertd/internal/silence"
)

var t0 = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

// hostile is what a device may put in a topic or a payload value.
const hostile = `<script>alert(1)</script>`

func sampleStatus() Status {
	return Status{
		Host: "pi", At: t0,
		Sources: []StatusSource{{Name: "mqtt", Ready: true}, {Name: "smtp", Why: "not serving"}},
		Firing: []StatusAlert{
			{Rule: "hot", Series: "sensors/" + hostile + "/t", State: "firing", Since: t0.Add(-3 * time.Minute), Value: `"><img src=x onerror=alert(2)>`,
				Field: "temp", Threshold: "30", LastMail: t0.Add(-3 * time.Minute)},
			{Rule: "hot", Series: "sensors/shed/t", State: "firing", Since: t0.Add(-time.Minute), Value: "33", Held: "cooldown", RetryAt: t0.Add(29 * time.Minute)},
		},
		Pending:    []StatusAlert{{Rule: "slow", Series: "slow/x", State: "pending", Since: t0, Value: "35", FiresAt: t0.Add(2 * time.Minute)}},
		Suppressed: []StatusSuppressed{{Rule: "hot", Reason: "cooldown", Count: 4}},
		Silences:   []silence.Silence{{ID: 3, Rule: "hot", Series: "sensors/+/t", Comment: "door </td> open", Expires: t0.Add(2 * time.Hour)}},
		Outbox: StatusOutbox{Pending: 2, Oldest: t0.Add(-time.Hour), Attempts: 5, LastError: "421 4.7.0 <try> later", Dead: 1,
			DeadLetters: []StatusDead{{ID: 9, Rule: "hot", Series: "sensors/a/t", Subject: "Hot <b>", To: []string{"ops@example.org"}, DeadAt: t0, Error: "550 5.1.1 <ops@example.org>: no such user"}}},
		Config: StatusConfig{File: "/etc/alertd/alertd.yaml", Rules: 3, LoadedAt: t0.Add(-time.Hour), LastReloadOK: true},
	}
}

func serveStatus(t *testing.T, st func() Status) string {
	t.Helper()
	srv, err := Listen("127.0.0.1:0", Options{
		Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Health: func() []SourceHealth { return nil }, Status: st,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + srv.Addr()
}

func get(t *testing.T, url, host string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// Topics, values, comments and server replies are hostile input: the page
// shows them as text, never as markup.
func TestStatusPageEscapesWhatDevicesAndServersSent(t *testing.T) {
	base := serveStatus(t, sampleStatus)
	resp, page := get(t, base+"/", "")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, raw := range []string{"<script>alert", "<img src=x", "</td> open", "Hot <b>", "<try>", "<ops@example.org>"} {
		if strings.Contains(page, raw) {
			t.Errorf("page contains %q unescaped", raw)
		}
	}
	for _, escaped := range []string{"sensors/&lt;script&gt;alert(1)&lt;/script&gt;/t", "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;",
		"door &lt;/td&gt; open", "421 4.7.0 &lt;try&gt; later", "550 5.1.1 &lt;ops@example.org&gt;: no such user"} {
		if !strings.Contains(page, escaped) {
			t.Errorf("page lacks %q", escaped)
		}
	}
	if n := strings.Count(page, "<script"); n != 1 || !strings.Contains(page, `<script src="assets/status.js" defer></script>`) {
		t.Errorf("page has %d scripts, want only its own", n)
	}
	for _, want := range []string{"(2 firing) alertd on pi", "held: cooldown", "until " + t0.Add(29*time.Minute).Local().Format("15:04:05"), "for 3m", "in 2m", "smtp</b> down: not serving",
		"2 mail waiting", "1 dead letter<", "<b>hot</b> 4 by cooldown", "every 10 s", `<meta name="viewport"`,
		`<noscript><meta http-equiv="refresh" content="10"></noscript>`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q: the page is only true now", resp.Header.Get("Cache-Control"))
	}
	for _, asset := range []string{"status.css", "status.js", "icon.svg"} {
		if resp, body := get(t, base+"/assets/"+asset, ""); resp.StatusCode != 200 || len(body) == 0 || resp.Header.Get("ETag") == "" {
			t.Errorf("asset %s: %d, %d bytes, ETag %q", asset, resp.StatusCode, len(body), resp.Header.Get("ETag"))
		}
	}
	if resp, _ := get(t, base+"/nope", ""); resp.StatusCode != 404 {
		t.Errorf("GET /nope: %d, want 404", resp.StatusCode)
	}
}

// The JSON twin is under /api: the same data, for this machine only.
func TestStatusJSONIsTheSameDataForThisMachineOnly(t *testing.T) {
	base := serveStatus(t, func() Status { return Status{Host: "pi", At: t0} })
	resp, body := get(t, base+"/api/v1/status", "")
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/v1/status: %d %s", resp.StatusCode, body)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	for _, list := range []string{"sources", "firing", "pending", "suppressed", "silences"} {
		if l, ok := st[list].([]any); !ok || len(l) != 0 {
			t.Errorf("%s is %v, want [] (not null) when empty", list, st[list])
		}
	}
	if resp, _ := get(t, base+"/api/v1/status", "evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("through a DNS name: %d, want 403 as for the rest of /api", resp.StatusCode)
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 42 * time.Second: "42s", 59*time.Second + 600*time.Millisecond: "1m", 12*time.Minute + 5*time.Second: "12m5s",
		3 * time.Hour: "3h", 3*time.Hour + 12*time.Minute + 40*time.Second: "3h13m", 53 * time.Hour: "2d5h", -time.Second: "0s",
	} {
		if got := Human(d); got != want {
			t.Errorf("Human(%v) = %q, want %q", d, got, want)
		}
	}
}

// Profiles are for this machine, like /api: an operator runs go tool
// pprof against them; nobody on the LAN reads stack traces.
func TestProfilesAreForThisMachineOnly(t *testing.T) {
	base := serveStatus(t, func() Status { return Status{Host: "pi", At: t0} })
	resp, body := get(t, base+"/debug/pprof/heap", "")
	if resp.StatusCode != 200 || len(body) == 0 {
		t.Fatalf("GET /debug/pprof/heap: %d, %d bytes", resp.StatusCode, len(body))
	}
	if resp, body := get(t, base+"/debug/pprof/", ""); resp.StatusCode != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("GET /debug/pprof/: %d %.80q", resp.StatusCode, body)
	}
	if resp, _ := get(t, base+"/debug/pprof/heap", "evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("through a DNS name: %d, want 403 as for /api", resp.StatusCode)
	}
	if resp, _ := get(t, base+"/debug/pprof/cmdline", ""); resp.StatusCode == 200 {
		t.Errorf("the command line is served")
	}
}

// In cluster mode the page says which instance this is, who else is in
// the cluster and who owns each partition; instance names are operator
// input, shown as text. A single alertd's page has no such section.
func TestStatusPageShowsTheCluster(t *testing.T) {
	st := sampleStatus()
	st.Cluster = &StatusCluster{Instance: "pi-" + hostile, Members: []string{"pi-" + hostile, "b"}, Stream: "alertd_ingest", Messages: 7,
		Partitions: []StatusPartition{{Partition: 0, Owner: "pi-" + hostile, Term: 12, Pending: 3, AckPending: 1}, {Partition: 1, Owner: "b", Term: 9}, {Partition: 2}}}
	_, page := get(t, serveStatus(t, func() Status { return st })+"/", "")
	if strings.Contains(page, "pi-<script>") {
		t.Error("an instance name is shown as markup")
	}
	for _, want := range []string{`<section id="cluster">`, "This is instance <b>pi-&lt;script&gt;", "<b>b</b>", "1 of 3 partitions, 1 unowned",
		`<tr class="partition mine">`, "3 waiting, 1 in hand", `<tr class="partition unowned">`, "holds 7 readings not yet handled"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	_, single := get(t, serveStatus(t, sampleStatus)+"/", "")
	if strings.Contains(single, `id="cluster"`) || strings.Contains(single, "partitions") {
		t.Error("a single alertd's page has a cluster section")
	}
}
