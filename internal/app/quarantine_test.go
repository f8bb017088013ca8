package app

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/alertd/alertd/internal/store"
)

func groupKey(rule string, seq int) []byte { return fmt.Appendf(append([]byte(rule), 0), "%020d", seq) }

// putGroupItems writes group items straight into the groups bucket: a
// readable one for each series given, a damaged value for each "".
func putGroupItems(t *testing.T, db *store.DB, rule string, first int, series ...string) {
	t.Helper()
	if err := db.Update(func(tx *store.Tx) error {
		for i, s := range series {
			v := []byte(`{"series":"` + "\x00\x00\x00\x00\x00\x00")
			if s != "" {
				// A group item as the notify stage writes it.
				v, _ = json.Marshal(map[string]any{"series": s, "state": "firing", "value": "35", "at": time.Now()})
			}
			if err := tx.Bucket(store.BucketGroups).Put(groupKey(rule, first+i), v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Unreadable group items are quarantined, at restore and at the flush that
// meets them; the readable ones are still mailed, and a group of nothing
// readable sends no mail.
func TestUnreadableGroupItemsAreQuarantined(t *testing.T) {
	dir := t.TempDir()
	yaml := spoolConfig("", `
  - {name: heat, topic: "farm/+/t", field: temp, above: 30, group_wait: 100ms}
  - {name: cold, topic: "farm/+/t", field: temp, below: 0, group_wait: 100ms}
`)
	cfg, err := Check(writeConfig(t, dir, yaml))
	if err != nil {
		t.Fatal(err)
	}
	db, _, err := store.Open(cfg.Store.Path)
	if err != nil {
		t.Fatal(err)
	}
	putGroupItems(t, db, "heat", 1, "", "farm/a/t")
	putGroupItems(t, db, "cold", 3, "")
	db.Close()

	app := startApp(t, dir, yaml)
	spool := filepath.Join(dir, "spool")
	quarantined := func() float64 { return testutil.ToFloat64(app.metrics.StoreQuarantined.WithLabelValues("groups")) }
	if got := quarantined(); got != 2 {
		t.Errorf("quarantined at restore: %v, want 2", got)
	}
	m := waitSpooled(t, spool, 1)[0]
	if m.Subject != "[warning] heat: 1 firing" || !strings.Contains(m.Body, "farm/a/t") {
		t.Fatalf("restored group mail %q:\n%s", m.Subject, m.Body)
	}

	// Damaged while alertd runs: the flush quarantines it and mails the rest.
	putGroupItems(t, app.db, "heat", 10, "", "farm/b/t")
	app.notify.OpenGroup("heat", time.Now())
	mails := waitSpooled(t, spool, 2)
	if !strings.Contains(mails[1].Body, "farm/b/t") || strings.Contains(mails[1].Body, "farm/a/t") {
		t.Errorf("second group mail:\n%s", mails[1].Body)
	}
	putGroupItems(t, app.db, "heat", 20, "")
	app.notify.OpenGroup("heat", time.Now())
	waitFor(t, 5*time.Second, "the lone damaged item quarantined", func() bool { return quarantined() == 4 })
	time.Sleep(300 * time.Millisecond) // a mail of nothing would be here
	if n := len(spooled(t, spool)); n != 2 {
		t.Errorf("%d mails, want 2: a group of unreadable items mails nothing", n)
	}
	app.refreshQuarantineMetrics()
	if got := testutil.ToFloat64(app.metrics.QuarantineEntries.WithLabelValues("groups")); got != 4 {
		t.Errorf("alertd_store_quarantine_entries{bucket=groups} = %v, want 4", got)
	}
	if logs := app.logs.String(); strings.Count(logs, "moved to quarantine") != 4 || !strings.Contains(logs, "left out of its group mail") {
		t.Errorf("want one log line per quarantined item, saying what it means:\n%s", logs)
	}
}
