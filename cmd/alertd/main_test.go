package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// These tests build alertd once and run it as a user would: the exit
// status, what goes to stdout and stderr, and what never does.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "alertd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "alertd")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build alertd:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// alertd runs the binary with args, in the test's environment changed by
// env: "NAME=value" sets NAME, a bare "NAME" unsets it.
func alertd(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = os.Environ()
	for _, kv := range env {
		name, _, set := strings.Cut(kv, "=")
		cmd.Env = slices.DeleteFunc(cmd.Env, func(e string) bool { return strings.HasPrefix(e, name+"=") })
		if set {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("alertd %v: %v", args, err)
	}
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

const smtpPassword = "app-pw-Zq9-never-printed"

func TestCheckGoodFile(t *testing.T) {
	env := []string{"SMTP_PASSWORD=" + smtpPassword}
	for _, args := range [][]string{
		{"check", "-config", "testdata/good.yaml"},
		{"check", "--config", "testdata/good.yaml"},
		{"check", "-config=testdata/good.yaml"},
		{"check", "--config=testdata/good.yaml"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := alertd(t, env, args...)
			if r.code != 0 {
				t.Fatalf("exit %d, want 0\nstderr: %s", r.code, r.stderr)
			}
			out := lines(r.stdout)
			if len(out) != 1 || r.stderr != "" {
				t.Fatalf("want exactly one line of summary on stdout and nothing on stderr, got\nstdout: %q\nstderr: %q", r.stdout, r.stderr)
			}
			for _, want := range []string{"testdata/good.yaml: ok: 2 rule(s)", "broker tcp://broker.example.org:1883", "smtp.example.org:587", "starttls"} {
				if !strings.Contains(out[0], want) {
					t.Errorf("summary %q lacks %q", out[0], want)
				}
			}
			if strings.Contains(r.stdout+r.stderr, smtpPassword) {
				t.Errorf("check printed the SMTP password: %s", r.stdout)
			}
		})
	}
}

func TestCheckShippedExample(t *testing.T) {
	r := alertd(t, nil, "check", "-config", "../../rules.example.yaml")
	if r.code != 0 || len(lines(r.stdout)) != 1 || !strings.Contains(r.stdout, "embedded broker on 127.0.0.1:18830") {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// TestCheckBadFile: every mistake in each file, one per line, positioned,
// in file order, and exit 2. Template mistakes come from compiling the
// rules, not from loading the file, and must be among them.
func TestCheckBadFile(t *testing.T) {
	files, _ := filepath.Glob("testdata/*bad.yaml")
	if len(files) < 3 {
		t.Fatalf("want testdata/bad.yaml, mistakes.bad.yaml and indent.bad.yaml, found %v", files)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) { checkBadFile(t, file) })
	}
}

func checkBadFile(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, line := range lines(string(data)) {
		if msg, ok := strings.CutPrefix(line, "# want: "); ok {
			want = append(want, file+":"+msg)
		}
	}
	r := alertd(t, []string{"SMTP_PASSWORD=" + smtpPassword}, "check", "-config", file)
	if r.code != 2 {
		t.Errorf("exit %d, want 2", r.code)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q, want nothing", r.stdout)
	}
	got := lines(r.stderr)
	positioned := regexp.MustCompile(`^` + regexp.QuoteMeta(file) + `:\d+:\d+: \S`)
	for _, line := range got {
		if !positioned.MatchString(line) {
			t.Errorf("not FILE:LINE:COL: message: %q", line)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("check printed\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
	if strings.Contains(r.stderr, smtpPassword) {
		t.Error("check printed the SMTP password")
	}
}

func TestCheckUnsetSecret(t *testing.T) {
	r := alertd(t, []string{"SMTP_PASSWORD"}, "check", "-config", "testdata/good.yaml")
	want := "testdata/good.yaml:11:13: smtp.password: environment variable SMTP_PASSWORD is not set (write ${SMTP_PASSWORD:-} to allow it to be empty)\n"
	if r.code != 2 || r.stderr != want || r.stdout != "" {
		t.Errorf("exit %d\nstderr: %s\nwant exit 2 and: %s", r.code, r.stderr, want)
	}
}

// TestCheckUnreadableFile: a file that cannot be read is a fatal error
// (exit 1), said in one line that names the file.
func TestCheckUnreadableFile(t *testing.T) {
	for _, path := range []string{"testdata/does-not-exist.yaml", "testdata"} {
		r := alertd(t, nil, "check", "-config", path)
		if r.code != 1 || len(lines(r.stderr)) != 1 || !strings.Contains(r.stderr, path) || r.stdout != "" {
			t.Errorf("check -config %s: exit %d\nstdout: %q\nstderr: %q\nwant exit 1 and one line naming the file", path, r.code, r.stdout, r.stderr)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		r := alertd(t, nil, arg)
		if r.code != 0 || !regexp.MustCompile(`^alertd \S+\n$`).MatchString(r.stdout) || r.stderr != "" {
			t.Errorf("alertd %s: exit %d stdout %q stderr %q", arg, r.code, r.stdout, r.stderr)
		}
	}
}

// TestUsageErrors: a command line alertd cannot understand exits 2 and
// says why on stderr.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // a part of stderr
	}{
		{nil, "usage: alertd <command>"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"chek", "-config", "x.yaml"}, "usage: alertd <command>"},
		{[]string{"check"}, "-config FILE is required"},
		{[]string{"check", "-config"}, "flag needs an argument"},
		{[]string{"check", "-confg", "testdata/good.yaml"}, "flag provided but not defined: -confg"},
		{[]string{"check", "-config", "testdata/good.yaml", "extra"}, `unexpected argument "extra"`},
		{[]string{"run"}, "-config FILE is required"},
	} {
		r := alertd(t, nil, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("alertd %q: exit %d\nstdout: %q\nstderr: %q\nwant exit 2 and %q on stderr", tc.args, r.code, r.stdout, r.stderr, tc.want)
		}
	}
}

// syncBuffer is a bytes.Buffer a running process writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRunQuickStart follows the README's quick start: run on the embedded
// broker with no smtp, wait for /healthz, publish a hot reading, find the
// mail in the spool, then SIGTERM: alertd exits 0 within 10 seconds.
func TestRunQuickStart(t *testing.T) {
	dir := t.TempDir()
	httpAddr := freePort(t)
	config := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(config, []byte(`
mqtt:
  listen: 127.0.0.1:0
http:
  listen: `+httpAddr+`
store:
  path: alertd.db
defaults:
  to: [ops@example.org]
rules:
  - name: greenhouse-hot
    topic: "sensors/+/telemetry"
    field: temp
    above: 30
    subject: "Hot in {{.Device}}: {{.Value}}"
`), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd, stderr, exited := launch(t, config, nil)

	waitHealthy(t, "http://"+httpAddr+"/healthz", exited)

	m := brokerOf(stderr)
	if m == nil {
		t.Fatal("the log does not say where the embedded broker listens")
	}
	publish(t, m[1], "sensors/greenhouse/telemetry", `{"temp": 31.5}`)
	raw := waitForMail(t, filepath.Join(dir, "spool"), exited)
	msg, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("spooled mail does not parse: %v\n%s", err, raw)
	}
	to, _ := msg.Header.AddressList("To")
	if msg.Header.Get("Subject") != "Hot in greenhouse: 31.5" || len(to) != 1 || to[0].Address != "ops@example.org" {
		t.Errorf("spooled mail:\n%s", raw)
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
	if strings.Contains(stderr.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", stderr.String())
	}
}

// waitHealthy polls /healthz until it answers 200 "ok" (the subscriber is
// subscribed), failing if alertd exits or 20 seconds pass.
func waitHealthy(t *testing.T, url string, exited <-chan error) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(body) == "ok\n" {
				return
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("alertd exited before it was healthy: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy after 20s (last error %v)", url, err)
		}
	}
}

func publish(t *testing.T, broker, topic, payload string) {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID("alertd-main-test").SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to %s: %v", broker, tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
}

// waitForMail returns the first .eml file written into dir.
func waitForMail(t *testing.T, dir string, exited <-chan error) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
		if len(files) > 0 {
			data, err := os.ReadFile(files[0])
			if err != nil {
				t.Fatal(err)
			}
			return string(data)
		}
		select {
		case err := <-exited:
			t.Fatalf("alertd exited before mailing: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mail in %s after 20s", dir)
		}
	}
}

// launch starts `alertd run -config config` (env, when not nil, is the
// whole environment) for a test that stops or signals it itself; it is
// killed if still running when the test ends, and its log shown if the
// test failed.
func launch(t *testing.T, config string, env []string) (*exec.Cmd, *syncBuffer, <-chan error) {
	t.Helper()
	stderr := &syncBuffer{}
	cmd := exec.Command(binary, "run", "-config", config)
	if env != nil {
		cmd.Env = env
	}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("alertd's log:\n%s", stderr.String())
		}
	})
	return cmd, stderr, exited
}

var brokerRE = regexp.MustCompile(`embedded MQTT broker listening.* url=(tcp://\S+)`)

// brokerOf is the embedded broker's URL match from alertd's log, nil if
// it says none.
func brokerOf(log *syncBuffer) []string { return brokerRE.FindStringSubmatch(log.String()) }
