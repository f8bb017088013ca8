package dryrun

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/config"
)

// ParseTime reads a time as written on the command line: RFC 3339
// (2026-05-01T12:00:00Z), "2026-05-01 12:00[:05]" in local time, or
// "12:00[:05]" on base's day, local time.
func ParseTime(s string, base time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	for _, layout := range []string{"15:04:05", "15:04"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			y, m, d := base.In(time.Local).Date()
			return time.Date(y, m, d, t.Hour(), t.Minute(), t.Second(), 0, time.Local), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use 2026-05-01T12:00:00Z, \"2026-05-01 12:00\" or 12:00", s)
}

// Payload reads a payload as given: "@FILE" is the content of FILE
// (relative to dir), anything else the payload itself.
func Payload(s, dir string) ([]byte, error) {
	name, ok := strings.CutPrefix(s, "@")
	if !ok {
		return []byte(s), nil
	}
	if !filepath.IsAbs(name) {
		name = filepath.Join(dir, name)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, config.MaxFileSize))
	if err != nil {
		return nil, fmt.Errorf("payload %s: %w", name, err)
	}
	return data, nil
}

// ReadEvents reads an events file: one reading a line, "TIME TOPIC
// PAYLOAD", where TIME is as ParseTime reads it without spaces, or
// +DURATION after the line before (the first line: after start); PAYLOAD
// is the rest of the line, or @FILE (relative to the events file). Blank
// lines and lines starting with # are skipped. Times must not go back.
func ReadEvents(path string, start time.Time) ([]Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	defer f.Close()
	var out []Event
	prev := start
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), config.MaxFileSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ev, err := parseLine(line, prev, filepath.Dir(path))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if ev.At.Before(prev) && len(out) > 0 {
			return nil, fmt.Errorf("%s:%d: %s is before the line above (%s): readings go in time order", path, n, stamp(ev.At), stamp(prev))
		}
		out = append(out, ev)
		prev = ev.At
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("events %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no readings (lines of TIME TOPIC PAYLOAD)", path)
	}
	return out, nil
}

func parseLine(line string, prev time.Time, dir string) (Event, error) {
	f := strings.Fields(line)
	if len(f) < 3 {
		return Event{}, fmt.Errorf("want TIME TOPIC PAYLOAD, got %q", line)
	}
	var at time.Time
	if d, ok := strings.CutPrefix(f[0], "+"); ok {
		dur, err := config.ParseDuration(d)
		if err != nil {
			return Event{}, err
		}
		at = prev.Add(dur.D())
	} else {
		t, err := ParseTime(f[0], prev)
		if err != nil {
			return Event{}, err
		}
		at = t
	}
	rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(strings.TrimPrefix(line, f[0])), f[1]))
	p, err := Payload(rest, dir)
	if err != nil {
		return Event{}, err
	}
	return Event{At: at, Topic: f[1], Payload: p}, nil
}
