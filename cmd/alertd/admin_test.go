package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The admin commands on a stopped alertd, as an operator types them.
func TestSilenceAndOutboxCommandsOnAStoppedStore(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "alertd.yaml")
	yaml := "store: {path: " + filepath.Join(dir, "alertd.db") + "}\nhttp: {listen: \"off\"}\n" +
		"defaults: {to: [ops@example.org]}\nrules:\n  - {name: hot, topic: \"s/+/t\", field: temp, above: 30}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	r := alertd(t, nil, "silence", "add", "-config", cfg, "-rule", "hot", "-series", "s/+/t", "-for", "2h", "-comment", "door open")
	m := regexp.MustCompile(`^silence (\d+): rule hot on s/\+/t until .* \(store `).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("silence add: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	id := m[1]
	if r := alertd(t, nil, "silence", "add", "-config", cfg, "-rule", "nope", "-for", "1h"); r.code != 1 || !strings.Contains(r.stderr, `no rule named "nope"`) {
		t.Errorf("silence for an unknown rule: exit %d, %q", r.code, r.stderr)
	}
	if r := alertd(t, nil, "silence", "add", "-config", cfg, "-rule", "hot"); r.code != 2 {
		t.Errorf("silence add without -for: exit %d, want 2", r.code)
	}
	r = alertd(t, nil, "silence", "list", "-config", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "door open") || !strings.Contains(r.stdout, "s/+/t") {
		t.Errorf("silence list: exit %d, %q", r.code, r.stdout)
	}
	if r := alertd(t, nil, "silence", "remove", id, "-config", cfg); r.code != 0 {
		t.Errorf("silence remove (ID before the flags): exit %d, %q", r.code, r.stderr)
	}
	if r := alertd(t, nil, "silence", "remove", "-config", cfg, id); r.code != 1 || !strings.Contains(r.stderr, "no silence "+id) {
		t.Errorf("removing twice: exit %d, %q", r.code, r.stderr)
	}
	if r := alertd(t, nil, "silence", "list", "-config", cfg); r.code != 0 || strings.TrimSpace(r.stdout) != "no active silences" {
		t.Errorf("silence list after remove: %q", r.stdout)
	}

	if r := alertd(t, nil, "outbox", "list", "-config", cfg); r.code != 0 || strings.TrimSpace(r.stdout) != "outbox is empty" {
		t.Errorf("outbox list: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r := alertd(t, nil, "outbox", "retry", "-config", cfg, "7"); r.code != 1 || !strings.Contains(r.stderr, "no entry 7") {
		t.Errorf("outbox retry of a missing entry: exit %d, %q", r.code, r.stderr)
	}
	if r := alertd(t, nil, "outbox", "drop", "-config", cfg, "x"); r.code != 2 {
		t.Errorf("outbox drop x: exit %d, want 2", r.code)
	}
	if r := alertd(t, nil, "outbox", "retry", "-config", cfg, "-all-dead"); r.code != 0 || !strings.HasPrefix(r.stdout, "0 dead entries queued again") {
		t.Errorf("outbox retry -all-dead: exit %d, %q", r.code, r.stdout)
	}
}
