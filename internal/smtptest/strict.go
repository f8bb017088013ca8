package smtptest

import (
	"bufio"
	_ "embed"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

//go:embed strict.py
var strictScript []byte

// python is Debian's interpreter, where python3-aiosmtpd is installed (a
// python3 earlier on PATH may be another installation without it).
const python = "/usr/bin/python3"

// StrictOptions configure the strict peer.
type StrictOptions struct {
	User, Password string // when set, AUTH (PLAIN or LOGIN) is required
}

// Strict is aiosmtpd running as a separate process. It refuses a nested
// MAIL ("503 Error: nested MAIL command"), answers RCPT to reject* with
// 550 and to later* with 450, and prompts AUTH LOGIN with "User Name\0" /
// "Password\0" as Microsoft's servers do.
type Strict struct {
	Addr string
	Host string
	Port int
	dir  string
}

// StartStrict starts the strict peer; it stops when the test ends.
func StartStrict(t testing.TB, o StrictOptions) *Strict {
	t.Helper()
	if err := exec.Command(python, "-c", "import aiosmtpd").Run(); err != nil {
		t.Fatalf("smtptest: %s cannot import aiosmtpd (%v): install python3-aiosmtpd (scripts/test.sh does)", python, err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "strict.py")
	if err := os.WriteFile(script, strictScript, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "mail")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	args := []string{script, itoa(port), out}
	if o.User != "" {
		args = append(args, o.User, o.Password)
	}
	cmd := exec.Command(python, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line) == "READY"
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("smtptest: aiosmtpd did not start: %s", stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("smtptest: aiosmtpd not ready after 15s: %s", stderr.String())
	}
	return &Strict{Addr: net.JoinHostPort("127.0.0.1", itoa(port)), Host: "127.0.0.1", Port: port, dir: out}
}

// Messages returns the mails accepted so far, in order.
func (s *Strict) Messages() []Message {
	files, _ := filepath.Glob(filepath.Join(s.dir, "*.eml"))
	sort.Strings(files)
	var out []Message
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// The first two lines carry the envelope.
		var from, to string
		for range 2 {
			line, rest, _ := strings.Cut(string(raw), "\r\n")
			raw = []byte(rest)
			if v, ok := strings.CutPrefix(line, "X-Envelope-From: "); ok {
				from = v
			} else if v, ok := strings.CutPrefix(line, "X-Envelope-To: "); ok {
				to = v
			}
		}
		m := parse(raw)
		m.From, m.To = from, strings.Split(to, ",")
		out = append(out, m)
	}
	return out
}

// WaitMessages waits until n mails were accepted.
func (s *Strict) WaitMessages(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	return waitMessages(t, n, timeout, s.Messages)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func itoa(n int) string { return strconv.Itoa(n) }
