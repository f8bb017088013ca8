package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/store/storetest"
)

// damagedStore writes a config for a stopped alertd (spool, no HTTP)
// whose store holds 20 queued mails, one of its pages damaged.
func damagedStore(t *testing.T, extra string) (dir, config, store string, damaged []byte) {
	t.Helper()
	dir = t.TempDir()
	store = filepath.Join(dir, "alertd.db")
	config = filepath.Join(dir, "alertd.yaml")
	yaml := "store: {path: " + store + "}\n" + extra +
		"defaults: {to: [ops@example.org]}\nrules:\n  - {name: hot, topic: \"s/+/t\", field: temp, above: 30}\n"
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	storetest.QueueMails(t, store, 20, "alertd <alertd@localhost>", "ops@example.org")
	damaged = storetest.DamagePageHolding(t, store, `"subject":"queued mail 05"`)
	return dir, config, store, damaged
}

// Every command that opens the store says in one line that it is damaged
// and what alertd run will do, and changes nothing: no Go trace, no panic.
func TestAdminCommandsOnADamagedStore(t *testing.T) {
	_, config, store, damaged := damagedStore(t, "http: {listen: \"off\"}\n")
	for _, args := range [][]string{
		{"outbox", "list", "-config", config},
		{"outbox", "retry", "-config", config, "-all-dead"},
		{"outbox", "drop", "-config", config, "3"},
		{"silence", "list", "-config", config},
		{"silence", "add", "-config", config, "-rule", "hot", "-for", "1h"},
		{"store", "check", "-config", config},
	} {
		r := alertd(t, nil, args...)
		out := r.stdout + r.stderr
		if r.code != 1 || r.stdout != "" || len(lines(r.stderr)) != 1 {
			t.Errorf("alertd %s: exit %d\nstdout: %q\nstderr: %q\nwant exit 1 and one line on stderr", strings.Join(args[:2], " "), r.code, r.stdout, r.stderr)
		}
		for _, want := range []string{store, "damaged", "says it is page 0", "alertd run"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("alertd %s: %q does not say %q", strings.Join(args[:2], " "), r.stderr, want)
			}
		}
		if strings.Contains(out, "goroutine") || strings.Contains(out, "panic") {
			t.Errorf("alertd %s printed a Go trace:\n%s", strings.Join(args[:2], " "), out)
		}
	}
	if got, err := os.ReadFile(store); err != nil || !bytes.Equal(got, damaged) {
		t.Errorf("an admin command changed the damaged store (%v)", err)
	}
	if moved, _ := filepath.Glob(store + ".*"); len(moved) != 0 {
		t.Errorf("an admin command moved the store: %v", moved)
	}
}

func TestStoreCheckAndSalvage(t *testing.T) {
	_, config, store, damaged := damagedStore(t, "http: {listen: \"off\"}\n")
	r := alertd(t, nil, "store", "salvage", "-config", config)
	out := lines(r.stdout)
	if r.code != 0 || r.stderr != "" || len(out) < 3 {
		t.Fatalf("store salvage: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	m := regexp.MustCompile(`^moved it aside, untouched, to (\S+)$`).FindStringSubmatch(out[1])
	if !strings.HasPrefix(out[0], "store "+store+" was damaged: bucket outbox: page ") || m == nil ||
		!regexp.MustCompile(`^copied into a fresh store: outbox=1[5-9] dead=0 `).MatchString(out[2]) {
		t.Errorf("store salvage said:\n%s", r.stdout)
	}
	if m != nil {
		if kept, err := os.ReadFile(m[1]); err != nil || !bytes.Equal(kept, damaged) {
			t.Errorf("the moved-aside file is not the damaged one (%v)", err)
		}
	}
	if r := alertd(t, nil, "store", "check", "-config", config); r.code != 0 || r.stdout != "store "+store+": ok\n" {
		t.Errorf("store check after the salvage: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := alertd(t, nil, "store", "salvage", "-config", config); r.code != 0 || !strings.Contains(r.stdout, "ok, nothing to salvage") {
		t.Errorf("store salvage of a sound store: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if m != nil {
		r := alertd(t, nil, "store", "salvage", "-config", config, "-from", m[1])
		if r.code != 0 || !strings.Contains(r.stdout, "already in the store, kept as they were: outbox=1") {
			t.Errorf("store salvage -from the moved-aside file again: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
	}
	if r := alertd(t, nil, "outbox", "list", "-config", config); r.code != 0 || !strings.Contains(r.stdout, "queued mail 04") || strings.Contains(r.stdout, "queued mail 05") {
		t.Errorf("outbox list after the salvage: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	empty := filepath.Join(t.TempDir(), "alertd.yaml")
	if err := os.WriteFile(empty, []byte("store: {path: "+filepath.Join(filepath.Dir(empty), "alertd.db")+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := alertd(t, nil, "store", "check", "-config", empty); r.code != 0 || !strings.Contains(r.stdout, "none yet") {
		t.Errorf("store check with no store: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
}

// alertd run on the damaged store: it comes up healthy, logs the damage
// with both paths, and spools the mails that survived.
func TestRunOnADamagedStore(t *testing.T) {
	httpAddr := freePort(t)
	dir, config, store, damaged := damagedStore(t, "mqtt: {listen: 127.0.0.1:0}\nhttp: {listen: "+httpAddr+"}\n")
	cmd, stderr, exited := launch(t, config, nil)
	waitHealthy(t, "http://"+httpAddr+"/healthz", exited)

	m := regexp.MustCompile(`level=ERROR msg="store file was damaged[^"]*" path=(\S+) moved_to=(\S+) damage="bucket outbox: page \d+ says it is page 0" salvaged="outbox=(\d+) `).FindStringSubmatch(stderr.String())
	if m == nil || m[1] != store || !strings.HasPrefix(m[2], store+".corrupt-") {
		t.Fatalf("the log does not name the damage and both paths")
	}
	if kept, err := os.ReadFile(m[2]); err != nil || !bytes.Equal(kept, damaged) {
		t.Errorf("the moved-aside file is not the damaged one (%v)", err)
	}
	salvaged, _ := strconv.Atoi(m[3])
	spool := filepath.Join(dir, "spool")
	deadline := time.Now().Add(20 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(spool, "*.eml"))
		if len(files) == salvaged && salvaged >= 15 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mails spooled, want the %d salvaged", len(files), salvaged)
		}
		time.Sleep(50 * time.Millisecond)
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
	if s := stderr.String(); strings.Contains(s, "goroutine") || strings.Contains(s, "panic") {
		t.Errorf("a Go trace in the log:\n%s", s)
	}
}
