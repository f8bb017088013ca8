package app

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/smtptest"
	"github.com/alertd/alertd/internal/store/storetest"
)

// A store with a page of its outbox overwritten, as bbolt panicked on at
// every start: alertd starts, says what was damaged and where the file
// went, keeps that file as it was, and delivers the mail that survived,
// each once.
func TestDamagedStoreStartsAndDeliversWhatSurvived(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{"alerts@example.org": smtpPassword}})
	dir := t.TempDir()
	path := filepath.Join(dir, "alertd.db")
	queued := storetest.QueueMails(t, path, 20, "alerts@example.org", "ops@example.org")
	damaged := storetest.DamagePageHolding(t, path, `"subject":"queued mail 05"`)

	app := startApp(t, dir, smtpConfig(t, broker.URL(), srv.Port, "starttls", srv.CAFile, "", greenhouse))
	logs := app.logs.String()
	line := regexp.MustCompile(`(?m)^.*level=ERROR msg="store file was damaged.*$`).FindString(logs)
	m := regexp.MustCompile(` path=(\S+) moved_to=(\S+) damage="(bucket outbox: page \d+ says it is page 0)" salvaged="outbox=(\d+) `).FindStringSubmatch(line)
	if m == nil || m[1] != path || !strings.HasPrefix(m[2], path+".corrupt-") {
		t.Fatalf("no log line naming the damage, the store and where it went:\n%s", logs)
	}
	if kept, err := os.ReadFile(m[2]); err != nil || !bytes.Equal(kept, damaged) {
		t.Errorf("the moved-aside file is not the damaged file byte for byte (%v)", err)
	}
	salvaged, _ := strconv.Atoi(m[4])
	if salvaged < 15 || salvaged >= len(queued) {
		t.Fatalf("%d of %d mails salvaged, want most but not the damaged page's", salvaged, len(queued))
	}

	got := srv.WaitMessages(t, salvaged, 20*time.Second)
	waitFor(t, 5*time.Second, "deliveries counted", func() bool { return app.counter("sent") == float64(salvaged) })
	time.Sleep(300 * time.Millisecond) // a second copy would show up here
	var subjects []string
	for _, msg := range srv.Messages() {
		subjects = append(subjects, msg.Subject)
	}
	slices.Sort(subjects)
	if len(subjects) != salvaged || len(slices.Compact(slices.Clone(subjects))) != salvaged {
		t.Errorf("delivered %q, want %d distinct mails", subjects, salvaged)
	}
	for _, s := range subjects {
		if !slices.Contains(queued, s) {
			t.Errorf("delivered %q, which was never queued", s)
		}
	}
	if slices.Contains(subjects, "queued mail 05") {
		t.Errorf("the mail on the damaged page was delivered: %q", subjects)
	}
	if len(got) > 0 && !slices.Equal(got[0].To, []string{"ops@example.org"}) {
		t.Errorf("delivered to %v", got[0].To)
	}
	if pending, dead, err := app.outbox.List(); err != nil || len(pending)+len(dead) != 0 {
		t.Errorf("after delivery the outbox holds %d pending and %d dead (%v)", len(pending), len(dead), err)
	}
}
