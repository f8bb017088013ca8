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

	"github.com/alertd/alertd/internal/smtptest"
)

// running is an `alertd run` process owned by one test.
type running struct {
	logs   *syncBuffer
	exited chan error
	http   string
}

// startRun runs `alertd run` on config with env added; it is stopped with
// SIGTERM at cleanup, and must exit 0 then.
func startRun(t *testing.T, config, httpAddr string, env ...string) *running {
	t.Helper()
	r := &running{logs: &syncBuffer{}, exited: make(chan error, 1), http: httpAddr}
	cmd := exec.Command(binary, "run", "-config", config)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = r.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-r.exited:
			if err != nil {
				t.Errorf("after SIGTERM: %v, want exit 0", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-r.exited
			t.Error("alertd did not exit within 10s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("alertd's log:\n%s", r.logs.String())
		}
	})
	return r
}

// get returns the status and body of GET path.
func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + r.http + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitBody polls path until its body contains want, and returns it.
func (r *running) waitBody(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body := r.get(t, path)
		if strings.Contains(body, want) {
			return body
		}
		select {
		case err := <-r.exited:
			t.Fatalf("alertd exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never contained %q; last:\n%s", path, want, body)
		}
	}
}

// TestRunPreflightTellsAtStart: run tries the SMTP settings at start and
// says in plain words, once, whether alerts can be mailed; it starts and
// serves either way, and sends no mail.
func TestRunPreflightTellsAtStart(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{mailUser: smtpPassword}})
	closed := closedPort(t)
	for _, tc := range []struct {
		name     string
		port     int
		password string
		status   string // what the verbose line begins with
		metric   string
		log      string // the one line the log has about it
		verbose  []string
	}{
		{"right password", srv.Port, smtpPassword, "ok", "alertd_smtp_preflight_ok 1",
			"smtp preflight passed: alerts can be mailed",
			[]string{fmt.Sprintf("smtp preflight: ok: connected to 127.0.0.1:%d, STARTTLS: TLS 1.3, certificate verified: subject CN=smtptest", srv.Port), "logged in as " + mailUser}},
		{"wrong password", srv.Port, "not-" + smtpPassword, "failed", "alertd_smtp_preflight_ok 0",
			"smtp preflight failed: alerts will stay queued until this is fixed",
			[]string{"smtp preflight: failed: 127.0.0.1:", `refused the login (it replied 535 5.7.8 "Authentication failed")`, "check smtp.username and smtp.password"}},
		{"nothing listening", closed, smtpPassword, "failed", "alertd_smtp_preflight_ok 0",
			"smtp preflight failed: alerts will stay queued until this is fixed",
			[]string{fmt.Sprintf("smtp preflight: failed: could not connect to 127.0.0.1:%d", closed), "nothing listens on port"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(srv.Commands())
			dir := t.TempDir()
			httpAddr := freePort(t)
			config := filepath.Join(dir, "alertd.yaml")
			if err := os.WriteFile(config, []byte(fmt.Sprintf(`mqtt: {listen: "127.0.0.1:0"}
http: {listen: %s}
store: {path: alertd.db}
smtp:
  host: 127.0.0.1
  port: %d
  username: %s
  password: ${SMTP_PASSWORD}
  from: "Alertas <%s>"
  timeout: 2s
  tls: {ca_file: %s}
defaults: {to: [ops@example.org]}
rules:
  - {name: hot, topic: "sensors/+/telemetry", field: temp, above: 30}
`, httpAddr, tc.port, mailUser, mailUser, srv.CAFile)), 0o600); err != nil {
				t.Fatal(err)
			}
			run := startRun(t, config, httpAddr, "SMTP_PASSWORD="+tc.password)
			waitHealthy(t, "http://"+httpAddr+"/healthz", run.exited) // a failed preflight does not hold the start
			body := run.waitBody(t, "/healthz?verbose=1", "smtp preflight: "+tc.status)
			for _, want := range append([]string{"status: ok\n", "mqtt: ready\n"}, tc.verbose...) {
				if !strings.Contains(body, want) {
					t.Errorf("/healthz?verbose=1 lacks %q:\n%s", want, body)
				}
			}
			if code, plain := run.get(t, "/healthz"); code != 200 || plain != "ok\n" {
				t.Errorf("/healthz %d %q, want 200 \"ok\\n\" as before", code, plain)
			}
			run.waitBody(t, "/metrics", tc.metric+"\n")
			time.Sleep(200 * time.Millisecond) // a second report would show here
			logs := run.logs.String()
			if n := strings.Count(logs, "smtp preflight"); n != 1 || !strings.Contains(logs, tc.log) {
				t.Errorf("%d log lines about the preflight, want exactly one saying %q:\n%s", n, tc.log, logs)
			}
			if strings.Contains(logs+body, tc.password) {
				t.Error("the password shows in the log or /healthz")
			}
			for _, c := range srv.Commands()[before:] {
				if strings.HasPrefix(c, "MAIL") {
					t.Errorf("the preflight sent %s", c)
				}
			}
		})
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d mails delivered; the preflight must send none", n)
	}
}
