package dryrun

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadEvents(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hot.json"), []byte(`{"temp": 40}`), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "events.txt")
	if err := os.WriteFile(path, []byte(`# comment

2026-05-01T12:00:00Z  s/a/t  {"temp": 31, "note": "two  spaces"}
+90s s/a/t @hot.json
+1h s/b/t plain text payload
`), 0o600); err != nil {
		t.Fatal(err)
	}
	evs, err := ReadEvents(path, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	want := []Event{
		{start, "s/a/t", []byte(`{"temp": 31, "note": "two  spaces"}`)},
		{start.Add(90 * time.Second), "s/a/t", []byte(`{"temp": 40}`)},
		{start.Add(90*time.Second + time.Hour), "s/b/t", []byte("plain text payload")},
	}
	if len(evs) != len(want) {
		t.Fatalf("got %d events, want %d", len(evs), len(want))
	}
	for i, w := range want {
		if !evs[i].At.Equal(w.At) || evs[i].Topic != w.Topic || string(evs[i].Payload) != string(w.Payload) {
			t.Errorf("line %d: got %v %q %q, want %v %q %q", i, evs[i].At, evs[i].Topic, evs[i].Payload, w.At, w.Topic, w.Payload)
		}
	}
}

func TestReadEventsSaysWhichLine(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"12:00 a/b\n", ":1: want TIME TOPIC PAYLOAD"},
		{"12:00 a/b 1\n+soon a/b 2\n", `:2: invalid duration "soon"`},
		{"12:00 a/b 1\n11:00 a/b 2\n", ":2: 2026-05-01 11:00:00"},
		{"# nothing\n", "no readings"},
	} {
		path := filepath.Join(t.TempDir(), "e.txt")
		if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := ReadEvents(path, time.Date(2026, 5, 1, 8, 0, 0, 0, time.Local))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.text, err, tc.want)
		}
	}
}
