package silence

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/store"
)

func TestSilencesMatchExpireAndSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	db, _, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	s, err := Open(db, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := s.Add(Silence{Rule: "hot", Expires: now.Add(time.Hour)})
	one, _ := s.Add(Silence{Rule: "cold", Series: "gh/+/t", Expires: now.Add(2 * time.Hour)})
	if all.ID == one.ID {
		t.Fatal("ids must differ")
	}
	cases := []struct {
		rule, series string
		at           time.Time
		want         time.Time
	}{
		{"hot", "any/topic", now, now.Add(time.Hour)},
		{"hot", "any/topic", now.Add(time.Hour), time.Time{}}, // expired
		{"cold", "gh/a/t", now, now.Add(2 * time.Hour)},
		{"cold", "other/a/t", now, time.Time{}},
		{"warm", "gh/a/t", now, time.Time{}},
	}
	for _, c := range cases {
		if got := s.Silenced(c.rule, c.series, c.at); !got.Equal(c.want) {
			t.Errorf("Silenced(%s, %s, %v) = %v, want %v", c.rule, c.series, c.at, got, c.want)
		}
	}
	if err := s.Remove(all.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(all.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
	db.Close()

	db, _, err = store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err = Open(db, now.Add(30*time.Minute), nil)
	if err != nil {
		t.Fatal(err)
	}
	if l := s.List(now.Add(30 * time.Minute)); len(l) != 1 || l[0].ID != one.ID {
		t.Errorf("after restart: %+v, want only silence %d", l, one.ID)
	}
	s, _ = Open(db, now.Add(3*time.Hour), nil)
	if l := s.List(now.Add(3 * time.Hour)); len(l) != 0 {
		t.Errorf("expired silences kept: %+v", l)
	}
}

func TestValidate(t *testing.T) {
	now := time.Now()
	rules := []string{"hot"}
	for _, c := range []struct {
		s    Silence
		fail bool
	}{
		{Silence{Rule: "hot", Expires: now.Add(time.Hour)}, false},
		{Silence{Rule: "hot", Series: "gh/#", Expires: now.Add(time.Hour)}, false},
		{Silence{Rule: "nope", Expires: now.Add(time.Hour)}, true},
		{Silence{Rule: "hot", Expires: now.Add(-time.Hour)}, true},
		{Silence{Rule: "hot", Series: "a/#/b", Expires: now.Add(time.Hour)}, true},
		{Silence{Expires: now.Add(time.Hour)}, true},
	} {
		if err := c.s.Validate(rules, now); (err != nil) != c.fail {
			t.Errorf("%+v: err %v, want failure %v", c.s, err, c.fail)
		}
	}
}

// A silence that cannot be decoded is quarantined, not silently taken for
// expired: it is reported once, the others still hold, and remove deletes
// the damaged copy by its id.
func TestUnreadableSilenceIsQuarantined(t *testing.T) {
	db, _, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	s, _ := Open(db, now, nil)
	good, _ := s.Add(Silence{Rule: "hot", Expires: now.Add(time.Hour)})
	bad, _ := s.Add(Silence{Rule: "cold", Expires: now.Add(time.Hour)})
	if err := db.Update(func(tx *store.Tx) error {
		return tx.Bucket(store.BucketSilences).Put(binary.BigEndian.AppendUint64(nil, bad.ID), []byte(`{"id":2,"rule":"co`))
	}); err != nil {
		t.Fatal(err)
	}

	var reported []store.Quarantined
	s, err = Open(db, now, func(q store.Quarantined) { reported = append(reported, q) })
	if err != nil {
		t.Fatalf("open with an unreadable silence: %v", err)
	}
	if l := s.List(now); len(l) != 1 || l[0].ID != good.ID {
		t.Errorf("silences %+v, want only %d", l, good.ID)
	}
	if len(reported) != 1 || reported[0].Bucket != "silences" || reported[0].KeyText() != strconv.FormatUint(bad.ID, 10) ||
		!strings.Contains(reported[0].Error, "decode silence") {
		t.Fatalf("reported %+v", reported)
	}
	if _, err := Open(db, now, func(store.Quarantined) { t.Error("reported twice") }); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(bad.ID); err != nil {
		t.Fatalf("remove the unreadable silence: %v", err)
	}
	_ = db.View(func(tx *store.Tx) error {
		if q := store.QuarantinedFrom(tx, store.BucketSilences); len(q) != 0 {
			t.Errorf("still in quarantine: %+v", q)
		}
		return nil
	})
	if err := s.Remove(bad.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
}
