package app

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/silence"
	"github.com/alertd/alertd/internal/store"
)

// buryMail puts a composed mail straight into the dead letters of the
// store at path, as a 5xx would have.
func buryMail(t *testing.T, path, subject string) uint64 {
	t.Helper()
	db, _, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	id := mailer.NewMessageID(now, SpoolFrom)
	msg, err := mailer.Compose(mailer.Mail{From: SpoolFrom, To: []string{"ops@example.org"}, Subject: subject, Body: "b", Date: now, MessageID: id})
	if err != nil {
		t.Fatal(err)
	}
	q := outbox.New(db)
	e := &outbox.Entry{Rule: "r", Series: "s", From: "alertd@localhost", To: []string{"ops@example.org"}, Subject: subject,
		MessageID: id, Message: msg, Created: now, Next: now, Attempts: 3, LastError: "smtp data: server replied 554 \"no\""}
	if err := q.Enqueue(e); err != nil {
		t.Fatal(err)
	}
	if err := q.Bury(e, now); err != nil {
		t.Fatal(err)
	}
	return e.ID
}

func TestOutboxAdminStoppedAndRunning(t *testing.T) {
	dir := t.TempDir()
	yaml := spoolConfig("", greenhouse)
	path := writeConfig(t, dir, yaml)
	cfg, err := Check(path)
	if err != nil {
		t.Fatal(err)
	}
	first := buryMail(t, cfg.Store.Path, "first dead")
	second := buryMail(t, cfg.Store.Path, "second dead")

	// Stopped: the store is opened directly.
	q, via, err := OpenQueue(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(via, "store ") {
		t.Errorf("via %q, want the store", via)
	}
	_, dead, err := q.List()
	if err != nil || len(dead) != 2 || !strings.Contains(dead[0].LastError, "554") {
		t.Fatalf("dead entries %v (err %v), want two with their reason", dead, err)
	}
	if err := q.Drop(first); err != nil {
		t.Fatal(err)
	}
	if err := q.Drop(first); !errors.Is(err, outbox.ErrNotFound) {
		t.Errorf("dropping twice: %v, want ErrNotFound", err)
	}
	q.Close()

	// Running: the same commands go through its HTTP API, and a retried
	// dead mail is delivered.
	app := startApp(t, dir, yaml)
	running := *app.cfg
	running.HTTP.Listen = app.HTTPAddr() // the test config asked for port 0
	q, via, err = OpenQueue(&running)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if !strings.HasPrefix(via, "running alertd at ") {
		t.Errorf("via %q, want the running alertd", via)
	}
	_, dead, err = q.List()
	if err != nil || len(dead) != 1 || dead[0].ID != second {
		t.Fatalf("dead entries over HTTP %v (err %v), want only %d", dead, err, second)
	}
	if err := q.Retry(first, time.Now()); !errors.Is(err, outbox.ErrNotFound) {
		t.Errorf("retrying a dropped entry: %v, want ErrNotFound", err)
	}
	n, err := q.RetryAllDead(time.Now())
	if err != nil || n != 1 {
		t.Fatalf("retry all dead: %d, %v", n, err)
	}
	mails := waitSpooled(t, filepath.Join(dir, "spool"), 1)
	if mails[0].Subject != "second dead" {
		t.Errorf("delivered %q, want the retried mail", mails[0].Subject)
	}
	waitFor(t, 5*time.Second, "queue empty", func() bool {
		pending, dead, err := q.List()
		return err == nil && len(pending) == 0 && len(dead) == 0
	})
}

func TestSilenceHoldsMailUntilItEnds(t *testing.T) {
	dir := t.TempDir()
	yaml := spoolConfig("", `
  - {name: hot, topic: "s/+/t", field: temp, above: 30, cooldown: 0s}
`)
	cfg, err := Check(writeConfig(t, dir, yaml))
	if err != nil {
		t.Fatal(err)
	}
	// Added while alertd is stopped, straight into the store.
	if err := os.MkdirAll(filepath.Dir(cfg.Store.Path), 0o700); err != nil {
		t.Fatal(err)
	}
	db, _, err := store.Open(cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	ss, _, err := OpenSilences(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ss.Add(silence.Silence{Rule: "nope", Expires: time.Now().Add(time.Hour)}); err == nil {
		t.Error("a silence for an unknown rule was accepted")
	}
	if _, err := ss.Add(silence.Silence{Rule: "hot", Series: "s/a/t", Comment: "maintenance", Expires: time.Now().Add(1500 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	ss.Close()

	app := startApp(t, dir, yaml)
	pub := mqtttest.NewPublisher(t, app.BrokerURL())
	pub.Publish(t, "s/a/t", `{"temp": 31}`) // silenced
	pub.Publish(t, "s/b/t", `{"temp": 32}`) // another series: not silenced
	spool := filepath.Join(dir, "spool")
	waitFor(t, 10*time.Second, "the silenced alert counted", func() bool { return app.counter("suppressed", "hot", "silenced") == 1 })
	mails := waitSpooled(t, spool, 1)
	if len(mails) != 1 || mails[0].Subject != "[warning] hot: b temp=32" {
		t.Fatalf("during the silence got %d mails, first %q; want only b's", len(mails), mails[0].Subject)
	}
	// The silence ends while s/a/t is still firing: its mail goes out then.
	mails = waitSpooled(t, spool, 2)
	if mails[1].Subject != "[warning] hot: a temp=31" {
		t.Errorf("after the silence: %q", mails[1].Subject)
	}
}

func TestSilencesOverHTTPWhileRunning(t *testing.T) {
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig("", `
  - {name: hot, topic: "s/+/t", field: temp, above: 30, cooldown: 0s}
`))
	running := *app.cfg
	running.HTTP.Listen = app.HTTPAddr()
	ss, via, err := OpenSilences(&running)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	if !strings.HasPrefix(via, "running alertd at ") {
		t.Fatalf("via %q", via)
	}
	if _, err := ss.Add(silence.Silence{Rule: "nope", Expires: time.Now().Add(time.Hour)}); err == nil || !strings.Contains(err.Error(), `no rule named "nope"`) {
		t.Errorf("unknown rule over HTTP: %v", err)
	}
	si, err := ss.Add(silence.Silence{Rule: "hot", Comment: "greenhouse door open", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if l := ss.List(time.Now()); len(l) != 1 || l[0].Comment != "greenhouse door open" {
		t.Fatalf("list %+v", l)
	}
	pub := mqtttest.NewPublisher(t, app.BrokerURL())
	pub.Publish(t, "s/a/t", `{"temp": 31}`)
	waitFor(t, 10*time.Second, "silenced", func() bool { return app.counter("suppressed", "hot", "silenced") == 1 })
	if err := ss.Remove(si.ID); err != nil {
		t.Fatal(err)
	}
	if err := ss.Remove(si.ID); !errors.Is(err, silence.ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
	// Removing the silence releases what it held: s/a/t's first mail goes
	// out now, not when the silence would have ended in an hour.
	if m := waitSpooled(t, filepath.Join(dir, "spool"), 1)[0]; m.Subject != "[warning] hot: a temp=31" {
		t.Errorf("after removing the silence: %q", m.Subject)
	}
	pub.Publish(t, "s/b/t", `{"temp": 31}`)
	if m := waitSpooled(t, filepath.Join(dir, "spool"), 2)[1]; m.Subject != "[warning] hot: b temp=31" {
		t.Errorf("a new alert after removing the silence: %q", m.Subject)
	}
}

// What a web page in the operator's browser could send: a simple POST
// (no preflight), from another origin, or through DNS rebinding.
func TestAPIRefusesWebPages(t *testing.T) {
	app := startApp(t, t.TempDir(), spoolConfig("", greenhouse))
	body := `{"rule":"greenhouse-hot","expires":"2999-01-01T00:00:00Z"}`
	try := func(name string, edit func(*http.Request)) int {
		req, _ := http.NewRequest("POST", "http://"+app.HTTPAddr()+"/api/v1/silences", strings.NewReader(body))
		req.Header.Set("Content-Type", "text/plain")
		edit(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for name, edit := range map[string]func(*http.Request){
		"simple cross-site POST": func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") },
		"DNS rebinding": func(r *http.Request) {
			r.Host = "rebind.evil.example:9464"
			r.Header.Set(httpapi.AdminHeader, "1")
		},
		"header but an Origin": func(r *http.Request) {
			r.Header.Set(httpapi.AdminHeader, "1")
			r.Header.Set("Origin", "https://evil.example")
		},
	} {
		if code := try(name, edit); code != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", name, code)
		}
	}
	if l := app.silences.List(time.Now()); len(l) != 0 {
		t.Fatalf("a web page added a silence: %+v", l)
	}
	// The alertd command's own request works.
	if code := try("admin", func(r *http.Request) { r.Header.Set(httpapi.AdminHeader, "1") }); code != http.StatusOK {
		t.Errorf("the admin request: status %d", code)
	}
	resp, err := http.Get("http://" + app.HTTPAddr() + "/api/v1/outbox")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("a local read: %v %v", err, resp.StatusCode)
	}
}

// A silence removed while alertd is stopped (alertd silence remove works
// on the store then) releases at the next start the first mail it held:
// the alert was held until the silence's end.
func TestSilenceRemovedWhileStoppedReleasesItsMail(t *testing.T) {
	dir := t.TempDir()
	yaml := spoolConfig("", `
  - {name: hot, topic: "s/+/t", field: temp, above: 30, cooldown: 0s}
`)
	app := startApp(t, dir, yaml)
	si, err := app.silences.Add(silence.Silence{Rule: "hot", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	pub := mqtttest.NewPublisher(t, app.BrokerURL())
	pub.Publish(t, "s/a/t", `{"temp": 31}`)
	waitFor(t, 10*time.Second, "the silenced alert counted", func() bool { return app.counter("suppressed", "hot", "silenced") == 1 })
	app.stop(t)

	cfg, err := Check(filepath.Join(dir, "alertd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ss, _, err := OpenSilences(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ss.Remove(si.ID); err != nil {
		t.Fatal(err)
	}
	ss.Close()
	startApp(t, dir, yaml)
	if mails := waitSpooled(t, filepath.Join(dir, "spool"), 1); mails[0].Subject != "[warning] hot: a temp=31" {
		t.Errorf("after the restart: %q", mails[0].Subject)
	}
}
