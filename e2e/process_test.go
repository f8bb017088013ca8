// Package e2e runs the alertd binary as a user would, against real
// Mosquitto and real SMTP servers, and injects the faults a process test
// can: kill -9 at chosen moments, SIGTERM, servers that go down or stall.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/httpapi"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "alertd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "alertd")
	build := exec.Command("go", "build", "-race", "-o", binary, "../cmd/alertd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build alertd:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is one running alertd.
type proc struct {
	config string // the file it runs with
	cmd    *exec.Cmd
	out    *syncBuffer
	http   string
	done   chan struct{}
	exitAt time.Time
}

// setup is one test's alertd installation: a config file and its port.
type setup struct {
	t        *testing.T
	dir      string
	config   string
	httpAddr string
}

func newSetup(t *testing.T, yaml string) *setup {
	t.Helper()
	dir := t.TempDir()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	yaml = fmt.Sprintf("http: {listen: %q}\nstore: {path: %q}\nlog: {level: debug}\n", addr, filepath.Join(dir, "alertd.db")) + yaml
	path := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return &setup{t: t, dir: dir, config: path, httpAddr: addr}
}

// start runs alertd and waits until it is healthy (subscribed).
func (s *setup) start() *proc {
	s.t.Helper()
	p := s.launch()
	p.waitHealthy(s.t)
	return p
}

// launch runs alertd without waiting for it.
func (s *setup) launch() *proc {
	t := s.t
	t.Helper()
	p := &proc{config: s.config, out: &syncBuffer{}, http: "http://" + s.httpAddr, done: make(chan struct{})}
	p.cmd = exec.Command(binary, "run", "-config", s.config)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); p.exitAt = time.Now(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		// The binary is built with -race: a race it found is a failure.
		if out := p.out.String(); strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("alertd (%s) reported a data race", s.config)
		}
		if t.Failed() {
			t.Logf("alertd output:\n%s", p.out.String())
		}
	})
	return p
}

// healthy reports whether /healthz answers 200.
func (p *proc) healthy() bool {
	resp, err := http.Get(p.http + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

func (p *proc) waitHealthy(t *testing.T) {
	t.Helper()
	waitFor(t, 20*time.Second, "alertd healthy", func() bool {
		select {
		case <-p.done:
			t.Fatalf("alertd exited at start:\n%s", p.out.String())
		default:
		}
		return p.healthy()
	})
}

// kill is kill -9.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// term sends SIGTERM and returns how long alertd took to exit, and its code.
func (p *proc) term(t *testing.T) (time.Duration, int) {
	t.Helper()
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("alertd did not exit 20s after SIGTERM")
	}
	return p.exitAt.Sub(start), p.cmd.ProcessState.ExitCode()
}

// outbox reads the running alertd's queue through its HTTP API.
func (p *proc) outbox(t *testing.T) httpapi.Listing {
	t.Helper()
	resp, err := http.Get(p.http + "/api/v1/outbox")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l httpapi.Listing
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		t.Fatal(err)
	}
	return l
}

// metrics reads the running alertd's /metrics as name{labels} → value.
func (p *proc) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get(p.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Ports handed out by freePort in this process, never handed out twice.
var ports struct {
	sync.Mutex
	given map[int]bool
}

// freePort returns a loopback port nothing listens on, for alertd to bind.
// A port from net.Listen("127.0.0.1:0") is not good enough: the kernel
// may give the same one again at the next call (a setup's admin and
// ingress listeners then collide), and it is an ephemeral port, which
// any outgoing connection on the machine (a test of another package
// running in parallel, a mailer retrying) may take as its local port
// before alertd binds it: "bind: address already in use". So the port
// comes from below the kernel's ephemeral range, where connections never
// take one, and each only once.
func freePort(t *testing.T) int {
	t.Helper()
	low := ephemeralLow()
	ports.Lock()
	defer ports.Unlock()
	if ports.given == nil {
		ports.given = map[int]bool{}
	}
	for range 1000 {
		port := 0
		if low > 20000 {
			port = 10000 + rand.IntN(low-10000)
			if ports.given[port] {
				continue
			}
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !ports.given[port] {
			ports.given[port] = true
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// on Linux by default), or 0 when it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}
