package smtptest

import (
	"bufio"
	_ "embed"
	"fmt"
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
	User, Password string // when set, AUTH (PLAIN or LOGIN) is required before MAIL
	// RefuseRepeatedEHLO answers a second EHLO on a connection with "503
	// 5.5.1 Invalid command: Already identified", as OpenSMTPD does
	// (RFC 5321 §4.1.4 allows it again; not every server agrees).
	RefuseRepeatedEHLO bool
}

// Strict is aiosmtpd running as a separate process, plaintext on loopback.
// It refuses a nested MAIL ("503 Error: nested MAIL command"), so a client
// that forgets RSET after a failed transaction is caught. Scripted by
// address:
//
//	RCPT TO:<reject...>   550 5.1.1
//	RCPT TO:<later...>    450 4.2.1
//	MAIL FROM:<reject...> 550 5.7.1
//	MAIL FROM:<later...>  451 4.3.0
//	DATA to any spam...   554 5.7.1 (after the message)
//
// AUTH LOGIN prompts "User Name\x00" / "Password\x00", as Microsoft's
// servers do. StrictOptions.RefuseRepeatedEHLO adds OpenSMTPD's refusal
// of a second EHLO.
type Strict struct {
	Addr string
	Host string
	Port int
	dir  string
}

// StartStrict starts the strict peer on a free loopback port and returns
// once it accepts connections; it stops when the test ends. A machine
// without aiosmtpd fails the test: the strict peer is never skipped.
func StartStrict(t testing.TB, o StrictOptions) *Strict {
	t.Helper()
	if out, err := exec.Command(python, "-c", "import aiosmtpd").CombinedOutput(); err != nil {
		t.Fatalf("smtptest: %s cannot import aiosmtpd (%v: %s): install python3-aiosmtpd (scripts/test.sh does)",
			python, err, strings.TrimSpace(string(out)))
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
	// The port is picked here and bound by Python a moment later; another
	// process may take it in between, so try a few.
	var problems []string
	for range 3 {
		port := freePort(t)
		if problem := runStrict(t, script, port, out, o); problem != "" {
			problems = append(problems, problem)
			continue
		}
		return &Strict{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Host: "127.0.0.1", Port: port, dir: out}
	}
	t.Fatalf("smtptest: aiosmtpd did not start:\n%s", strings.Join(problems, "\n"))
	return nil
}

// runStrict starts the script and waits for its READY line; it returns
// what went wrong, or "".
func runStrict(t testing.TB, script string, port int, out string, o StrictOptions) string {
	args := []string{script, strconv.Itoa(port), out}
	if o.User != "" {
		args = append(args, "--user="+o.User, "--password="+o.Password)
	}
	if o.RefuseRepeatedEHLO {
		args = append(args, "--refuse-repeated-ehlo")
	}
	cmd := exec.Command(python, args...)
	stdin, err := cmd.StdinPipe() // the script runs until stdin closes
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &strings.Builder{} // read only after Wait: exec copies into it meanwhile
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop := func() {
		_ = stdin.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line) == "READY"
	}()
	select {
	case ok := <-ready:
		if !ok {
			stop()
			return fmt.Sprintf("port %d: %s", port, stderr.String())
		}
	case <-time.After(15 * time.Second):
		stop()
		return fmt.Sprintf("port %d: not ready after 15s: %s", port, stderr.String())
	}
	t.Cleanup(stop)
	return ""
}

// Messages returns the mails accepted so far, in order. AuthUser is empty.
func (s *Strict) Messages() []Message {
	files, _ := filepath.Glob(filepath.Join(s.dir, "*.eml"))
	sort.Strings(files)
	var out []Message
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// The script writes the envelope as the first two lines.
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
		m.From = from
		if to != "" {
			m.To = strings.Split(to, ",")
		}
		out = append(out, m)
	}
	return out
}

// WaitMessages waits until at least n mails were accepted and returns them
// all; it fails the test if they do not arrive within timeout.
func (s *Strict) WaitMessages(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	return pollMessages(t, n, timeout, s.Messages)
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
