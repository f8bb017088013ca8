package notify

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/silence"
	"github.com/alertd/alertd/internal/store"
)

type fixture struct {
	nf    *Notifier
	db    *store.DB
	ob    *outbox.Outbox
	rules *rules.Engine
	now   time.Time
}

// newFixture builds a Notifier over a real store, with the rules of yaml.
func newFixture(t *testing.T, yaml string) *fixture {
	t.Helper()
	cfg, err := config.Load(strings.NewReader(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := rules.Compile(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	db, _, err := store.Open(filepath.Join(t.TempDir(), "alertd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{db: db, ob: outbox.New(db), rules: eng, now: t0}
	clock := func() time.Time { return f.now }
	sil, err := silence.Open(db, t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.nf = New(Options{DB: db, Gate: dedupe.New(db, clock), Silences: sil, Outbox: f.ob,
		From: "alertd <alerts@example.org>", Now: clock, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics: metrics.New(), Rule: eng.Rule})
	return f
}

func (f *fixture) fire(t *testing.T, kind alerts.Kind, rule, series string) Outcome {
	t.Helper()
	r := f.rules.Rule(rule)
	n := rules.Notification{Rule: r, Series: series, State: rules.StateFiring, Since: f.now, At: f.now,
		Value: rules.Value{Text: "31.5", Num: 31.5, IsNum: true}, LastSeen: f.now}
	out, err := f.nf.Commit(alerts.Transition{Kind: kind, Notification: n,
		Snapshot: alerts.Series{Rule: r, Topic: series, State: alerts.Firing, Since: f.now, LastSeen: f.now}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (f *fixture) pending(t *testing.T) []*outbox.Entry {
	t.Helper()
	p, _, err := f.ob.Due(f.now.Add(time.Hour), 1000)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const hotRules = `rules:
  - {name: hot, topic: "sensors/+/t", field: temp, above: 30, to: [ops@example.org], cooldown: 10m, rate_limit: 5/h}
`

// A mail that follows held-back ones says how many, once: when two first
// mails of one rule race, only one of them reports the count, and each
// says what its own transaction saw (the one prepared for a count that
// changed under it is prepared again).
func TestHeldBackCountIsReportedOnceByRacingMails(t *testing.T) {
	f := newFixture(t, hotRules)
	if out := f.fire(t, alerts.Fire, "hot", "sensors/a/t"); !out.Sent {
		t.Fatalf("first mail: %+v", out)
	}
	if out := f.fire(t, alerts.Remind, "hot", "sensors/a/t"); out.Sent || out.RetryAt.IsZero() {
		t.Fatalf("within the cooldown: %+v, want held with a retry time", out)
	}
	var wg sync.WaitGroup
	for _, s := range []string{"sensors/b/t", "sensors/c/t", "sensors/d/t"} {
		wg.Add(1)
		go func() { defer wg.Done(); f.fire(t, alerts.Fire, "hot", s) }()
	}
	wg.Wait()
	p := f.pending(t)
	if len(p) != 4 {
		t.Fatalf("%d mails queued, want 4", len(p))
	}
	saying := 0
	for _, e := range p {
		if strings.Contains(string(e.Message), "Held back:  1 notification") {
			saying++
		}
	}
	if saying != 1 {
		t.Errorf("%d mails say one was held back, want exactly 1", saying)
	}
}

// The rate limit does not drop what it holds back: the held alerts wait
// for the summary, and the series is recorded as firing.
func TestRateLimitedAlertsWaitForTheSummary(t *testing.T) {
	f := newFixture(t, `rules:
  - {name: hot, topic: "sensors/+/t", field: temp, above: 30, to: [ops@example.org], cooldown: 0s, rate_limit: 1/h}
`)
	f.fire(t, alerts.Fire, "hot", "sensors/a/t")
	out := f.fire(t, alerts.Fire, "hot", "sensors/b/t")
	if out.Sent || !out.Mailed || !out.RetryAt.IsZero() {
		t.Fatalf("over the rate limit: %+v, want held for the summary (no retry of its own)", out)
	}
	if _, at := f.nf.groups.next(); !at.Equal(t0.Add(time.Hour)) {
		t.Errorf("summary due at %v, want when the window reopens (%v)", at, t0.Add(time.Hour))
	}
	_ = f.db.View(func(tx *store.Tx) error {
		if items, _, _, _ := readGroup(tx, []byte("hot\x00"), 0); len(items) != 1 || items[0].Series != "sensors/b/t" {
			t.Errorf("waiting for the summary: %+v", items)
		}
		return nil
	})
	f.now = t0.Add(time.Hour)
	if _, err := f.nf.flushGroup(f.rules.Rule("hot")); err != nil {
		t.Fatal(err)
	}
	p := f.pending(t)
	if len(p) != 2 || !strings.Contains(p[1].Subject, "1 more alert(s) were held back") {
		t.Fatalf("mails %d, last %q: want the summary", len(p), p[len(p)-1].Subject)
	}
}

// With MaxGroupItems (a replicated store, whose commit carries a bounded
// number of writes), a summary takes at most that many alerts and the
// rest go in the next mails, the group reopened at once for them: none
// is dropped, none is listed twice.
func TestSummaryTakesAtMostMaxGroupItems(t *testing.T) {
	f := newFixture(t, `rules:
  - {name: hot, topic: "sensors/+/t", field: temp, above: 30, to: [ops@example.org], cooldown: 0s, rate_limit: 100/h}
`)
	f.nf.maxGroupItems = 3
	// Fill the rate window, then hold seven alerts for the summary.
	for i := range 100 {
		f.fire(t, alerts.Fire, "hot", fmt.Sprintf("sensors/first%d/t", i))
	}
	for i := range 7 {
		f.fire(t, alerts.Fire, "hot", fmt.Sprintf("sensors/held%d/t", i))
	}
	f.now = t0.Add(time.Hour)
	var counts []string
	for range 5 {
		if _, at := f.nf.groups.next(); at.IsZero() || at.After(f.now) {
			break
		}
		f.nf.groups.done("hot")
		if _, err := f.nf.flushGroup(f.rules.Rule("hot")); err != nil {
			t.Fatal(err)
		}
	}
	p := f.pending(t)[100:]
	for _, e := range p {
		counts = append(counts, strings.Fields(strings.SplitN(e.Subject, ": ", 2)[1])[0])
	}
	if strings.Join(counts, " ") != "3 3 1" {
		t.Fatalf("summaries of %v alerts, want 3 3 1", counts)
	}
	seen := map[string]int{}
	for _, e := range p {
		for i := range 7 {
			if strings.Contains(string(e.Message), fmt.Sprintf("held%d", i)) {
				seen[fmt.Sprint(i)]++
			}
		}
	}
	if len(seen) != 7 {
		t.Errorf("alerts in the summaries: %v, want each of the 7 once", seen)
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("held%s listed %d times", k, n)
		}
	}
}

// An episode's later mail is a reply with the first mail's subject (one
// conversation in Gmail and Outlook), its first line says the state, and
// a critical alert is marked important. Device text is escaped in HTML.
func TestThreadedReplyHTMLAndImportance(t *testing.T) {
	f := newFixture(t, `timezone: Europe/Madrid
rules:
  - {name: hot, topic: "sensors/+/t", field: temp, above: 30, to: [ops@example.org], severity: critical}
`)
	dev := "sensors/<script>alert(1)</script>/t"
	first := f.fire(t, alerts.Fire, "hot", dev)
	if !first.Sent || first.Subject == "" {
		t.Fatalf("first mail: %+v", first)
	}
	r := f.rules.Rule("hot")
	n := rules.Notification{Rule: r, Series: dev, State: rules.StateResolved, Since: f.now, At: f.now.Add(time.Minute),
		Value: rules.Value{Text: "20", Num: 20, IsNum: true}, LastSeen: f.now}
	if _, err := f.nf.Commit(alerts.Transition{Kind: alerts.Resolve, Notification: n, Notified: true, Thread: first.Thread,
		ThreadSubject: first.Subject, Snapshot: alerts.Series{Rule: r, Topic: dev, State: alerts.OK}}); err != nil {
		t.Fatal(err)
	}
	p := f.pending(t)
	if len(p) != 2 {
		t.Fatalf("%d mails", len(p))
	}
	fire, res := string(p[0].Message), string(p[1].Message)
	if p[1].Subject != "Re: "+p[0].Subject {
		t.Errorf("resolved subject %q, want Re: %q", p[1].Subject, p[0].Subject)
	}
	if !strings.Contains(res, "In-Reply-To: <"+first.Thread+">") {
		t.Errorf("resolved mail does not reply to the first:\n%s", res)
	}
	if !strings.Contains(fire, "Importance: high") || !strings.Contains(fire, "X-Priority: 1") || strings.Contains(res, "Importance: high") {
		t.Errorf("a firing critical mail is important, its resolved mail not")
	}
	if html := htmlPart(t, p[0].Message); strings.Contains(html, "<script>") || !strings.Contains(html, "&lt;script&gt;") ||
		!strings.Contains(html, "FIRING: hot") {
		t.Errorf("HTML part (device text must be escaped):\n%s", html)
	}
	if !strings.Contains(fire, "CET") && !strings.Contains(fire, "CEST") {
		t.Errorf("times are not in timezone: Europe/Madrid")
	}
}

func htmlPart(t *testing.T, msg []byte) string {
	t.Helper()
	r, err := mail.CreateReader(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := r.NextPart()
		if err != nil {
			t.Fatalf("no text/html part: %v", err)
		}
		if h, ok := p.Header.(*mail.InlineHeader); ok {
			if ct, _, _ := h.ContentType(); ct == "text/html" {
				b, _ := io.ReadAll(p.Body)
				return string(b)
			}
		}
	}
}

// A rule's own subject that shows the state is kept on the resolved mail
// (its author reads the state in the inbox); the mail still replies.
func TestOwnStateSubjectIsKept(t *testing.T) {
	f := newFixture(t, `rules:
  - name: hot
    topic: "sensors/+/t"
    field: temp
    above: 30
    to: [ops@example.org]
    subject: '{{if eq .State "resolved"}}Recuperado{{else}}Calor{{end}} en {{.Device}}'
`)
	first := f.fire(t, alerts.Fire, "hot", "sensors/a/t")
	r := f.rules.Rule("hot")
	n := rules.Notification{Rule: r, Series: "sensors/a/t", State: rules.StateResolved, Since: f.now, At: f.now}
	if _, err := f.nf.Commit(alerts.Transition{Kind: alerts.Resolve, Notification: n, Notified: true, Thread: first.Thread,
		ThreadSubject: first.Subject, Snapshot: alerts.Series{Rule: r, Topic: "sensors/a/t", State: alerts.OK}}); err != nil {
		t.Fatal(err)
	}
	p := f.pending(t)
	if len(p) != 2 || p[1].Subject != "Recuperado en a" || !strings.Contains(string(p[1].Message), "In-Reply-To: <"+first.Thread+">") {
		t.Errorf("resolved mail %q, want its own subject, replying to the first", p[1].Subject)
	}
}
