// Package storetest makes damaged alertd stores for tests: a store with
// mail queued as alertd queues it, then one of its pages overwritten the
// way a bad disk or an interrupted copy leaves it.
package storetest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/store"
)

// QueueMails creates the store at path with n mails in its outbox, from
// from to to, with subjects "queued mail 01" and on (returned in order),
// each big enough that a page holds only a few.
func QueueMails(t testing.TB, path string, n int, from, to string) []string {
	t.Helper()
	db, _, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q := outbox.New(db)
	var subjects []string
	for i := range n {
		now := time.Now()
		subject := fmt.Sprintf("queued mail %02d", i+1)
		id := mailer.NewMessageID(now, from)
		body := subject + "\n" + strings.Repeat("a line of the alert's body\n", 40)
		msg, err := mailer.Compose(mailer.Mail{From: from, To: []string{to}, Subject: subject, Body: body, Date: now, MessageID: id})
		if err != nil {
			t.Fatal(err)
		}
		e := &outbox.Entry{Rule: "r", Series: "s", From: from, To: []string{to}, Subject: subject,
			MessageID: id, Message: msg, Created: now, Next: now}
		if err := q.Enqueue(e); err != nil {
			t.Fatal(err)
		}
		subjects = append(subjects, subject)
	}
	return subjects
}

// DamagePageHolding overwrites with zeros the page id of the page in use
// in the store at path whose bytes hold text (older copies of it may lie
// on free pages), as in "page 35 says it is page 0", and returns the
// damaged file's bytes. The rest of the page, and the entries on it, stay
// as they were.
func DamagePageHolding(t testing.TB, path, text string) []byte {
	t.Helper()
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The page size is in the first meta page, after the page header
	// (16 bytes), the magic and the version.
	ps := int(binary.NativeEndian.Uint32(img[24:]))
	for from := 0; ps >= 1024; {
		i := bytes.Index(img[from:], []byte(text))
		if i < 0 {
			break
		}
		page := (from + i) / ps
		from = (page + 1) * ps
		damaged := bytes.Clone(img)
		clear(damaged[page*ps:][:8])
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		var d *store.Damage
		if err := store.Check(path); errors.As(err, &d) {
			return damaged
		}
	}
	t.Fatalf("no page in use in %s holds %q", path, text)
	return nil
}
