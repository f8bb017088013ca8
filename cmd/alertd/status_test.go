package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// alertd status asks the running service what its status page shows and
// prints it for a terminal; a stopped alertd is said to be stopped.
func TestStatusCommand(t *testing.T) {
	dir := t.TempDir()
	httpAddr := freePort(t)
	config := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(config, []byte(`
mqtt: {listen: 127.0.0.1:0}
http: {listen: `+httpAddr+`}
store: {path: alertd.db}
defaults: {to: [ops@example.org]}
rules:
  - {name: greenhouse-hot, topic: "sensors/+/telemetry", field: temp, above: 30}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, stderr, exited := launch(t, config, nil)
	waitHealthy(t, "http://"+httpAddr+"/healthz", exited)
	m := brokerOf(stderr)
	if m == nil {
		t.Fatal("the log does not say where the embedded broker listens")
	}
	// A topic is what a device chose: it must not drive the terminal.
	publish(t, m[1], "sensors/\x1b[2Jgreenhouse/telemetry", `{"temp": 31.5}`)
	waitForMail(t, filepath.Join(dir, "spool"), exited)

	// The spool file is written before the delivered mail leaves the
	// outbox (its removal commits after it): ask until it has.
	var r result
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r = alertd(t, nil, "status", "-config", config)
		if r.code != 0 {
			t.Fatalf("status: exit %d, %q", r.code, r.stderr)
		}
		if strings.Contains(r.stdout, "outbox: no mail waiting") || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{"1 firing, 0 pending", "sources: mqtt up", "greenhouse-hot  sensors/\\x1b[2Jgreenhouse/telemetry  31.5 (threshold 30)",
		"nothing pending", "no active silences", "outbox: no mail waiting", "configuration: " + config + ", 1 rules"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "\x1b") {
		t.Errorf("status printed a raw escape character")
	}
	r = alertd(t, nil, "status", "-json", "-config", config)
	var st struct {
		Firing []struct{ Series string } `json:"firing"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil || len(st.Firing) != 1 || st.Firing[0].Series != "sensors/\x1b[2Jgreenhouse/telemetry" {
		t.Errorf("status -json: exit %d, %v, %q", r.code, err, r.stdout)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("alertd did not exit within 10s of SIGTERM")
	}
	r = alertd(t, nil, "status", "-config", config)
	if r.code != 1 || !strings.Contains(r.stderr, "alertd is not running at http://"+httpAddr) || r.stdout != "" {
		t.Errorf("status of a stopped alertd: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := alertd(t, nil, "status"); r.code != 2 || !strings.Contains(r.stderr, "usage: alertd status -config FILE") {
		t.Errorf("status without -config: exit %d, %q", r.code, r.stderr)
	}
}
