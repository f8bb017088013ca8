package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad: whatever the bytes, Load returns (never panics or hangs), and
// every error it reports points inside the input, so `check` can always
// say where. The seeds are every testdata file and the shipped example;
// testdata/fuzz/FuzzLoad holds inputs worth keeping.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	files = append(files, filepath.Join("..", "..", "rules.example.yaml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"", "~", "[]", "{}", "rules: [~]", "rules: [[]]", "a: &a [*a]\nrules: *a",
		"mqtt: {password: \"${\"}", "smtp: {port: 99999999999999999999}",
		"defaults: {above: 1e400}", "rules: [{name: a, topic: \"\\0\", equals: .nan}]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Load(bytes.NewReader(data), "fuzz.yaml")
		if err == nil {
			if cfg == nil {
				t.Fatal("no error and no config")
			}
			return
		}
		var errs Errors
		if !errors.As(err, &errs) {
			// A file-level error: the only one for bytes in memory is size.
			if cfg != nil || len(data) <= MaxFileSize {
				t.Fatalf("unpositioned error %q for %d bytes", err, len(data))
			}
			return
		}
		if len(errs) == 0 || len(errs) > MaxErrors+1 {
			t.Fatalf("%d errors", len(errs))
		}
		last := lineCount(data) + 1
		for i, e := range errs {
			if e.File != "fuzz.yaml" || e.Pos.Line < 1 || e.Pos.Line > last || e.Pos.Col < 1 {
				t.Errorf("error outside the %d-line input: %v", last-1, e)
			}
			if e.Msg == "" {
				t.Errorf("error %d has no message", i)
			}
			if i > 0 && i < MaxErrors && errs[i-1].Pos.Line > e.Pos.Line {
				t.Errorf("errors not in file order: %v before %v", errs[i-1], e)
			}
		}
	})
}

// lineCount counts lines as YAML does: besides \n, a lone \r, NEL, LS and
// PS end a line too (YAML 1.1, which go-yaml follows).
func lineCount(data []byte) int {
	n := 1
	for i := 0; i < len(data); i++ {
		switch {
		case data[i] == '\n':
			n++
		case data[i] == '\r':
			if i+1 >= len(data) || data[i+1] != '\n' {
				n++
			}
		case bytes.HasPrefix(data[i:], []byte("\u0085")),
			bytes.HasPrefix(data[i:], []byte("\u2028")),
			bytes.HasPrefix(data[i:], []byte("\u2029")):
			n++
		}
	}
	return n
}
