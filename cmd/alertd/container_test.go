package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The container's layout, without a container engine: the binary runs as
// the image's user (uid 65532, distroless "nonroot") in a network
// namespace of its own, the way a container does, with the image's
// configuration (scripts/system-config.sh, as the Dockerfile builds it)
// and its state volume owned by that user. From outside the namespace,
// through its own address as through a published port, /healthz answers
// and /api is refused; `alertd health` inside (the HEALTHCHECK) exits 0;
// the store is created in the volume, mode 0600.
func TestContainerLayoutAsNonrootInItsOwnNetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace (CI runs as root)")
	}
	for _, tool := range []string{"ip", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (Debian: iproute2, util-linux)", tool)
		}
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // go test makes them 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "var", "lib", "alertd")
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, 65532, 65532); err != nil {
		t.Fatal(err)
	}
	cfgText, err := exec.Command("../../scripts/system-config.sh", filepath.Join(state, "alertd.db"), "0.0.0.0:9464").Output()
	if err != nil {
		t.Fatalf("system-config.sh: %v", err)
	}
	cfg := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(cfg, cfgText, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "alertd")
	if data, err := os.ReadFile(binary); err != nil || os.WriteFile(bin, data, 0o755) != nil {
		t.Fatal("copy the binary where uid 65532 can run it")
	}

	n := os.Getpid() % 200
	ns := fmt.Sprintf("alertd-ct-%d", os.Getpid())
	host, guest := fmt.Sprintf("10.231.%d.1", n), fmt.Sprintf("10.231.%d.2", n)
	vh, vc := fmt.Sprintf("adh%d", os.Getpid()%100000), fmt.Sprintf("adc%d", os.Getpid()%100000)
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	sh("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	sh("link", "add", vh, "type", "veth", "peer", "name", vc)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", vh).Run() })
	sh("link", "set", vc, "netns", ns)
	sh("addr", "add", host+"/24", "dev", vh)
	sh("link", "set", vh, "up")
	sh("-n", ns, "addr", "add", guest+"/24", "dev", vc)
	sh("-n", ns, "link", "set", vc, "up")
	sh("-n", ns, "link", "set", "lo", "up")

	inside := func(args ...string) *exec.Cmd {
		return exec.Command("ip", append([]string{"netns", "exec", ns, "setpriv", "--reuid=65532", "--regid=65532", "--clear-groups", bin}, args...)...)
	}
	var logs syncBuffer
	run := inside("run", "-config", cfg)
	run.Stderr = &logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() {
		if run.ProcessState == nil {
			_ = run.Process.Signal(syscall.SIGTERM)
			<-exited
		}
		if t.Failed() {
			t.Logf("alertd's log:\n%s", logs.String())
		}
	})
	waitHealthy(t, "http://"+guest+":9464/healthz", exited)

	resp, err := http.Get("http://" + guest + ":9464/api/v1/outbox")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("/api from outside the namespace: %d %s, want 403", resp.StatusCode, body)
	}
	if out, err := inside("health", "-config", cfg).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("alertd health inside: %v %q", err, out)
	}
	fi, err := os.Stat(filepath.Join(state, "alertd.db"))
	if err != nil {
		t.Fatalf("no store in the volume: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65532 || fi.Mode().Perm() != 0o600 {
		t.Errorf("store owned by %d with mode %v, want 65532 and 0600", st.Uid, fi.Mode().Perm())
	}
	_ = run.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("no exit within 10 s of SIGTERM")
	}
	if strings.Contains(logs.String(), "level=ERROR") || strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("a clean run logged warnings:\n%s", logs.String())
	}
}

// alertd health against no running alertd: exit 1 and where it looked.
func TestHealthWhenNotRunning(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "a.yaml")
	port := freePort(t)
	if err := os.WriteFile(cfg, []byte("http: {listen: "+port+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := alertd(t, nil, "health", "-config", cfg)
	if r.code != 1 || !strings.Contains(r.stderr, "does not answer on http://"+port) {
		t.Errorf("health with nothing running: exit %d, %q", r.code, r.stderr)
	}
}

// Every verb's -h lists its flags and an example, and exits 0.
func TestEveryVerbHasHelpWithAnExample(t *testing.T) {
	for _, verb := range [][]string{{"run"}, {"check"}, {"reload"}, {"health"}, {"status"}, {"send-test"}, {"test"},
		{"oauth", "login"}, {"outbox", "list"}, {"silence", "add"}, {"store", "check"}} {
		r := alertd(t, nil, append(verb, "-h")...)
		if r.code != 0 || !strings.Contains(r.stderr, "-config") || !strings.Contains(r.stderr, "example") || !strings.Contains(r.stderr, "\n  alertd "+verb[0]) {
			t.Errorf("alertd %s -h: exit %d\n%s", strings.Join(verb, " "), r.code, r.stderr)
		}
	}
}
