package main

import (
	"bufio"
	"bytes"
	be "encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/smtptest"
	"github.com/alertd/alertd/internal/store"
)

// queueBacklog puts n composed mails, "backlog 01" to "backlog NN", in the
// outbox of the store at path, as a long SMTP outage would leave them.
func queueBacklog(t *testing.T, path string, n int) {
	t.Helper()
	db, _, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q := outbox.New(db)
	now := time.Now()
	for i := 1; i <= n; i++ {
		subject := fmt.Sprintf("backlog %02d", i)
		id := mailer.NewMessageID(now, "alertd@example.org")
		msg, err := mailer.Compose(mailer.Mail{From: "alertd <alertd@example.org>", To: []string{"ops@example.org"},
			Subject: subject, Body: "queued while the server was away", Date: now, MessageID: id})
		if err != nil {
			t.Fatal(err)
		}
		e := &outbox.Entry{Rule: "hot", Series: "s/a/t", From: "alertd@example.org", To: []string{"ops@example.org"},
			Subject: subject, MessageID: id, Message: msg, Created: now, Next: now}
		if err := q.Enqueue(e); err != nil {
			t.Fatal(err)
		}
		if e.ID != uint64(i) {
			t.Fatalf("entry %q has id %d, want %d", subject, e.ID, i)
		}
	}
}

// scribble overwrites, in the store file itself, the first 12 bytes of
// marker wherever it occurs, as a bad sector or a stray write would. bbolt
// keeps no checksum of its data pages, so it reads the damaged value back
// as it is. Every copy is hit: the live page, and older copies of it that
// copy-on-write left on free pages, so whichever is live is damaged.
func scribble(t *testing.T, path string, marker []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := bytes.Index(data, marker); i >= 0; i = bytes.Index(data, marker) {
		copy(data[i:i+12], make([]byte, 12))
		n++
	}
	if n == 0 {
		t.Fatalf("%q not found in %s", marker, path)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// scrape reads one sample of the service's /metrics: name with its labels
// as printed, e.g. `alertd_store_quarantined_total{bucket="outbox"}`.
func scrape(t *testing.T, base, sample string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no sample %s in /metrics", sample)
	return 0
}

// regexp17 is entry 17's row in the unreadable section of outbox list.
var regexp17 = regexp.MustCompile(`(?m)^17\s+unreadable\s+outbox\s+\d+ B\s`)

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The case: one damaged outbox entry stopped every mail behind it
// and every new one, hid itself from the operator and zeroed the queue
// depth. Now alertd quarantines it and keeps going; the operator sees it
// as unreadable, cannot retry it, drops it by its id.
func TestDamagedOutboxEntryIsQuarantinedAndTheRestDelivered(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.NoTLS})
	srv.SetDown(true) // the queue is looked at before it drains
	dir := t.TempDir()
	httpAddr := freePort(t)
	config := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`
mqtt: {broker: %s, client_id: alertd-quarantine-%d}
smtp:
  host: 127.0.0.1
  port: %d
  security: none
  auth: none
  from: "alertd <alertd@example.org>"
  retry: {initial: 50ms, max: 200ms, give_up_after: 1h}
store: {path: alertd.db}
http: {listen: %s}
defaults: {to: [ops@example.org]}
rules:
  - {name: hot, topic: "s/+/t", field: temp, above: 30, subject: "hot {{.Device}}: {{.Value}}"}
`, broker.URL(), time.Now().UnixNano(), srv.Port, httpAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, "alertd.db")
	queueBacklog(t, dbPath, 40)
	scribble(t, dbPath, []byte(`"subject":"backlog 17"`))
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt sees the damage (%v): the test would not be the issue's case", err)
		}
		if v := tx.Bucket(store.BucketOutbox).Get(be.BigEndian.AppendUint64(nil, 17)); !bytes.Contains(v, make([]byte, 12)) {
			t.Errorf("entry 17 as stored is not damaged: %q", v)
		}
		return nil
	})
	db.Close()

	cmd, stderr, exited := launch(t, config, nil)
	base := "http://" + httpAddr
	waitHealthy(t, base+"/healthz", exited)

	// While the server is down: the queue is what is really there.
	eventually(t, "queue depth 39", func() bool { return scrape(t, base, "alertd_mail_queue_depth") == 39 })
	if got := scrape(t, base, `alertd_store_quarantined_total{bucket="outbox"}`); got != 1 {
		t.Errorf("alertd_store_quarantined_total{bucket=outbox} = %v, want 1", got)
	}
	if got := scrape(t, base, `alertd_store_quarantine_entries{bucket="outbox"}`); got != 1 {
		t.Errorf("alertd_store_quarantine_entries{bucket=outbox} = %v, want 1", got)
	}
	resp, err := http.Get(base + "/api/v1/outbox")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var listing struct {
		Pending    []outbox.Entry      `json:"pending"`
		Unreadable []outbox.Unreadable `json:"unreadable"`
	}
	if err := json.Unmarshal(body, &listing); resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("GET /api/v1/outbox: %s (%v): %s", resp.Status, err, body)
	}
	if len(listing.Pending) != 39 || len(listing.Unreadable) != 1 || listing.Unreadable[0].ID != 17 || listing.Unreadable[0].Bucket != "outbox" {
		t.Fatalf("GET /api/v1/outbox: %d pending, unreadable %+v; want 39 and entry 17 from outbox", len(listing.Pending), listing.Unreadable)
	}

	r := alertd(t, nil, "outbox", "list", "-config", config)
	if r.code != 0 || !strings.Contains(r.stdout, "1 unreadable") ||
		!regexp17.MatchString(r.stdout) || !strings.Contains(r.stdout, `invalid character '\x00'`) {
		t.Fatalf("outbox list: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := alertd(t, nil, "outbox", "retry", "-config", config, "17"); r.code != 1 || !strings.Contains(r.stderr, "entry 17 could not be read, so it cannot be retried") {
		t.Errorf("outbox retry 17: exit %d, %q", r.code, r.stderr)
	}

	// The server is back: everything behind the damaged entry goes out.
	srv.SetDown(false)
	msgs := srv.WaitMessages(t, 39, 10*time.Second)
	var want, got []string
	for i := 1; i <= 40; i++ {
		if i != 17 {
			want = append(want, fmt.Sprintf("backlog %02d", i))
		}
	}
	for _, m := range msgs {
		got = append(got, m.Subject)
	}
	if !slices.Equal(got, want) {
		t.Errorf("delivered %q,\nwant %q", got, want)
	}
	eventually(t, "queue depth 0", func() bool { return scrape(t, base, "alertd_mail_queue_depth") == 0 })

	if r := alertd(t, nil, "outbox", "drop", "-config", config, "17"); r.code != 0 || !strings.HasPrefix(r.stdout, "entry 17 dropped") {
		t.Fatalf("outbox drop 17: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r := alertd(t, nil, "outbox", "list", "-config", config); r.code != 0 || strings.TrimSpace(r.stdout) != "outbox is empty" {
		t.Errorf("outbox list after the drop: exit %d, %q", r.code, r.stdout)
	}
	eventually(t, "quarantine gauge 0", func() bool {
		return scrape(t, base, `alertd_store_quarantine_entries{bucket="outbox"}`) == 0
	})

	// A new alert is delivered too.
	publish(t, broker.URL(), "s/kitchen/t", `{"temp": 41}`)
	msgs = srv.WaitMessages(t, 40, 10*time.Second)
	if s := msgs[39].Subject; s != "hot kitchen: 41" {
		t.Errorf("new alert's subject %q", s)
	}
	if got := scrape(t, base, `alertd_store_quarantined_total{bucket="outbox"}`); got != 1 {
		t.Errorf("alertd_store_quarantined_total{bucket=outbox} = %v at the end, want 1", got)
	}
	if n := strings.Count(stderr.String(), "moved to quarantine"); n != 1 {
		t.Errorf("the damaged entry was logged %d times, want once", n)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("alertd did not exit within 10s of SIGTERM")
	}
}

// With alertd stopped, the commands open the store: the list moves a
// damaged entry to quarantine itself and shows it, and drop deletes it.
func TestDamagedEntryOnAStoppedStore(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "alertd.yaml")
	dbPath := filepath.Join(dir, "alertd.db")
	if err := os.WriteFile(config, []byte("store: {path: "+dbPath+"}\nhttp: {listen: \"off\"}\n"+
		"defaults: {to: [ops@example.org]}\nrules:\n  - {name: hot, topic: \"s/+/t\", field: temp, above: 30}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	queueBacklog(t, dbPath, 3)
	// A raw Put through bbolt is enough here: what matters is what the
	// commands do with a value that does not decode, not how it got there.
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(store.BucketOutbox).Put(be.BigEndian.AppendUint64(nil, 2), []byte("{\x00\x00\x00"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	r := alertd(t, nil, "outbox", "list", "-config", config)
	if r.code != 0 || !strings.Contains(r.stdout, "backlog 01") || !strings.Contains(r.stdout, "backlog 03") ||
		!regexp.MustCompile(`(?m)^2\s+unreadable\s+outbox\s+4 B\s`).MatchString(r.stdout) {
		t.Fatalf("outbox list: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := alertd(t, nil, "outbox", "retry", "-config", config, "2"); r.code != 1 || !strings.Contains(r.stderr, "entry 2 could not be read") {
		t.Errorf("outbox retry 2: exit %d, %q", r.code, r.stderr)
	}
	if r := alertd(t, nil, "outbox", "drop", "-config", config, "2"); r.code != 0 {
		t.Fatalf("outbox drop 2: exit %d, %q", r.code, r.stderr)
	}
	if r := alertd(t, nil, "outbox", "list", "-config", config); strings.Contains(r.stdout, "unreadable") {
		t.Errorf("outbox list after the drop:\n%s", r.stdout)
	}
}
