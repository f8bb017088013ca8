package silence

import (
	"errors"
	"path/filepath"
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
	s, err := Open(db, now)
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
	s, err = Open(db, now.Add(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if l := s.List(now.Add(30 * time.Minute)); len(l) != 1 || l[0].ID != one.ID {
		t.Errorf("after restart: %+v, want only silence %d", l, one.ID)
	}
	s, _ = Open(db, now.Add(3*time.Hour))
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
