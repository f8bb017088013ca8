package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

// What the ingress scenarios share: the alertd binary under a config of
// the scenario's, an upstream SMTP sink that notes when each benchmark
// mail arrived, and the closed- and open-loop load drivers.

// alertdProc is the alertd binary running one scenario's config.
type alertdProc struct {
	cmd    *exec.Cmd
	out    bytes.Buffer // read only once the process has exited
	exited chan struct{}
	admin  string // the admin API, for /metrics
}

// startAlertdBin writes cfg (which must set http.listen to admin) into dir
// and runs bin on it until /metrics answers and every address in listeners
// accepts connections.
func startAlertdBin(bin, dir, cfg, admin string, listeners ...string) (*alertdProc, error) {
	p, err := spawnAlertd(bin, dir, cfg, admin)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for p.metric("alertd_mail_queued_total") < 0 || !dialable(listeners...) {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("alertd exited at start:\n%s", p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("alertd did not start listening within 30 s:\n%s", p.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p, nil
}

func dialable(addrs ...string) bool {
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, time.Second)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

func (p *alertdProc) metric(sample string) float64 {
	return metricValue("http://"+p.admin+"/metrics", sample)
}

// stop sends SIGTERM and waits (kill after 15 s); a non-zero exit is an
// error carrying alertd's output.
func (p *alertdProc) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("alertd did not exit 15 s after SIGTERM:\n%s", p.out.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("alertd exited %d:\n%s", code, p.out.String())
	}
	return nil
}

// freeAddr is a loopback address nothing listens on right now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// arrivals is an upstream SMTP server that accepts everything and notes
// when each benchmark mail (bench-id-N in it) first arrived.
type arrivals struct {
	srv  *smtp.Server
	port int
	n    atomic.Int64 // mails, benchmark or not

	mu   sync.Mutex
	seen map[int64]time.Time
}

var benchIDIn = regexp.MustCompile(`bench-id-(\d+)`)

type arrivalSession struct{ a *arrivals }

func (x arrivalSession) Mail(string, *smtp.MailOptions) error { return nil }
func (x arrivalSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (x arrivalSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	now := time.Now()
	if m := benchIDIn.FindSubmatch(b); m != nil {
		id, _ := strconv.ParseInt(string(m[1]), 10, 64)
		x.a.mu.Lock()
		if _, dup := x.a.seen[id]; !dup {
			x.a.seen[id] = now
		}
		x.a.mu.Unlock()
	}
	x.a.n.Add(1)
	return nil
}
func (x arrivalSession) Reset()        {}
func (x arrivalSession) Logout() error { return nil }

func startArrivals() (*arrivals, error) {
	a := &arrivals{seen: map[int64]time.Time{}}
	a.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return arrivalSession{a}, nil }))
	a.srv.Domain = "upstream.localhost"
	a.srv.MaxRecipients = 0
	port, err := startSinkWith(a.srv)
	a.port = port
	return a, err
}

// waitFor waits until every id in want has arrived, or until nothing new
// arrived for stall; it returns each arrival time found.
func (a *arrivals) waitFor(want []int64, stall time.Duration) map[int64]time.Time {
	got := make(map[int64]time.Time, len(want))
	lastChange := time.Now()
	for {
		a.mu.Lock()
		for _, id := range want {
			if _, ok := got[id]; !ok {
				if at, ok := a.seen[id]; ok {
					got[id] = at
					lastChange = time.Now()
				}
			}
		}
		a.mu.Unlock()
		if len(got) == len(want) || time.Since(lastChange) > stall {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitCount waits until at least n mails have arrived, or until the count
// stalls for stall; false then.
func (a *arrivals) waitCount(n int64, stall time.Duration) bool {
	last, lastChange := a.n.Load(), time.Now()
	for {
		got := a.n.Load()
		if got >= n {
			return true
		}
		if got != last {
			last, lastChange = got, time.Now()
		}
		if time.Since(lastChange) > stall {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// loadResult is one measurement at one offered load.
type loadResult struct {
	ok, errs int
	firstErr string
	rate     float64        // completed operations per second
	lat      latencySummary // client side: start → reply
	e2e      latencySummary // SMTP: start → the upstream server accepted the relayed copy
	lost     int            // SMTP: accepted but not arrived upstream
	relayed  float64        // SMTP: mails arrived upstream per second, from the start to the last arrival
	offered  float64        // open loop: the fixed rate
	inFlight int            // open loop: most requests outstanding at once
}

type latencySummary struct{ p50, p99, max time.Duration }

func summarize(lat []time.Duration) latencySummary {
	if len(lat) == 0 {
		return latencySummary{}
	}
	lat = slices.Clone(lat)
	slices.Sort(lat)
	return latencySummary{lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]}
}

// closedLoop runs clients goroutines, each calling op back to back (op's
// argument is the client's number) until d has passed since the start. It
// returns every successful op's latency and the time from the start to
// the last op's return.
func closedLoop(clients int, d time.Duration, op func(client int) error) (lat []time.Duration, errs int, firstErr error, elapsed time.Duration) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	var last time.Time
	for c := range clients {
		wg.Go(func() {
			var mine []time.Duration
			var bad int
			var e1 error
			var end time.Time
			for time.Since(t0) < d {
				s := time.Now()
				err := op(c)
				end = time.Now()
				if err != nil {
					bad++
					if e1 == nil {
						e1 = err
					}
					time.Sleep(time.Millisecond) // a refusing server must not spin the client
					continue
				}
				mine = append(mine, end.Sub(s))
			}
			mu.Lock()
			lat, errs = append(lat, mine...), errs+bad
			if firstErr == nil {
				firstErr = e1
			}
			if end.After(last) {
				last = end
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return lat, errs, firstErr, last.Sub(t0)
}

// openLoop starts op at a fixed rate for d, each on a goroutine of its
// own, whether or not earlier ones have returned, and measures each from
// the moment it was due (so a stalled server shows in the latencies, not
// in a lower offered rate).
func openLoop(rate float64, d time.Duration, op func() error) (lat []time.Duration, errs int, firstErr error, maxInFlight int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var inFlight, most atomic.Int64
	interval := time.Duration(float64(time.Second) / rate)
	t0 := time.Now()
	for i := 0; ; i++ {
		due := t0.Add(time.Duration(i) * interval)
		if due.Sub(t0) >= d {
			break
		}
		time.Sleep(time.Until(due))
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		wg.Go(func() {
			err := op()
			took := time.Since(due)
			inFlight.Add(-1)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			lat = append(lat, took)
		})
	}
	wg.Wait()
	return lat, errs, firstErr, int(most.Load())
}

// medianOf is the median of f over rs.
func medianOf[T any](rs []T, f func(T) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// errNote says how many operations failed and how, for a table cell.
func errNote(rs []loadResult) string {
	errs, first := 0, ""
	for _, r := range rs {
		errs += r.errs
		if first == "" {
			first = r.firstErr
		}
	}
	if errs == 0 {
		return "0"
	}
	if len(first) > 60 {
		first = first[:60] + "…"
	}
	return fmt.Sprintf("%d (%s)", errs, first)
}

// ingressScenarios builds the alertd binary and runs the named ingress
// scenarios ("smtp-ingress", "http-ingress"), returning their tables.
func ingressScenarios(broker, dir string, o options, names ...string) (string, error) {
	bin := o.alertdBin
	if bin == "" {
		var err error
		if bin, err = buildAlertd(dir); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	var err error
	for _, name := range names {
		var table string
		switch name {
		case "smtp-ingress":
			table, err = smtpIngress(broker, dir, bin, o)
		case "http-ingress":
			table, err = httpIngress(broker, dir, bin, o)
		}
		if err != nil {
			return "", err
		}
		b.WriteString(table)
	}
	return b.String(), nil
}

// loadAvg is the machine's 1-minute load average, as /proc/loadavg says
// ("?" elsewhere): the ingress figures are only comparable within a run
// on a quiet machine, and this says how quiet it was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}
