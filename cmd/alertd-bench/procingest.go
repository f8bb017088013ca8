package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The ingest scenarios with every party a process of its own: -publishers
// publisher processes offer the stream, one contender process consumes it
// (the bare paho subscriber, the raw-socket reader, or the alertd binary),
// and the harness only watches: every -sample it reads the contender's
// count over HTTP (each contender serves one, so each pays the same
// cadence of scrapes) and the CPU time of the contender and of Mosquitto
// from /proc. Rates and CPU are taken over the steady middle of the run:
// from when the count crossed 10 % of what arrived to when it crossed
// 90 %.

// child is a running child process of the harness.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr bytes.Buffer
	exited chan struct{}
}

func startChild(s childSpec) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	spec, _ := json.Marshal(s)
	c := &child{cmd: exec.Command(exe), lines: make(chan string, 16), exited: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	c.cmd.Stderr = &c.stderr
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// expect waits for a line starting with prefix.
func (c *child) expect(prefix string, within time.Duration) (string, error) {
	select {
	case l, ok := <-c.lines:
		if !ok {
			<-c.exited
			return "", fmt.Errorf("child exited: %s", strings.TrimSpace(c.stderr.String()))
		}
		if !strings.HasPrefix(l, prefix) {
			return "", fmt.Errorf("child said %q, want %s", l, prefix)
		}
		return l, nil
	case <-time.After(within):
		return "", fmt.Errorf("child did not say %s within %v: %s", prefix, within, strings.TrimSpace(c.stderr.String()))
	}
}

// stop sends SIGTERM and waits (kill after 10 s).
func (c *child) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("child did not exit 10 s after SIGTERM")
	}
	if code := c.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("child exited %d: %s", code, strings.TrimSpace(c.stderr.String()))
	}
	return nil
}

// cpuOf is a process's user+system CPU seconds, from /proc/PID/stat (-1
// when it cannot be read).
func cpuOf(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	// Fields 14 and 15 of stat (utime, stime), counted from after the
	// command name: 12 and 13 here. Linux's USER_HZ is 100.
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}

// schedOf is a single-threaded process's time on a CPU and time runnable
// but waiting for one, in seconds, from /proc/PID/schedstat (-1 when it
// cannot be read). Together they say whether Mosquitto is the ceiling:
// near 100 % between them, it always had work.
func schedOf(pid int) (run, wait float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	f := strings.Fields(string(b))
	if err != nil || len(f) < 2 {
		return -1, -1
	}
	r, _ := strconv.ParseFloat(f[0], 64)
	w, _ := strconv.ParseFloat(f[1], 64)
	return r / 1e9, w / 1e9
}

// machineBusy is the CPU seconds all cores have spent busy since boot,
// from /proc/stat (USER_HZ 100; -1 when it cannot be read).
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return -1
	}
	busy := 0.0
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		if i == 3 || i == 4 {
			continue
		}
		n, _ := strconv.ParseFloat(v, 64)
		busy += n
	}
	return busy / 100
}

// sample is one look at a run.
type sample struct {
	at         time.Time
	count      float64
	cpu, mosqu float64 // CPU seconds of the contender and of Mosquitto
	mosqWait   float64 // seconds Mosquitto was runnable but waiting for a CPU
	busy       float64 // CPU seconds of the whole machine
}

type sampler struct {
	mu   sync.Mutex
	s    []sample
	stop chan struct{}
	done chan struct{}
}

// startSampler samples every `every`, starting now with count 0.
func startSampler(every time.Duration, count func() float64, pid, mosqPid int) *sampler {
	sp := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	take := func(first bool) {
		n := 0.0
		if !first {
			if n = count(); n < 0 {
				return // not serving yet
			}
		}
		s := sample{at: time.Now(), count: n, cpu: cpuOf(pid), busy: machineBusy()}
		s.mosqu, s.mosqWait = schedOf(mosqPid)
		sp.mu.Lock()
		sp.s = append(sp.s, s)
		sp.mu.Unlock()
	}
	take(true)
	go func() {
		defer close(sp.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-sp.stop:
				take(false)
				return
			case <-t.C:
				take(false)
			}
		}
	}()
	return sp
}

func (sp *sampler) last() sample {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.s[len(sp.s)-1]
}

func (sp *sampler) finish() []sample {
	close(sp.stop)
	<-sp.done
	return sp.s
}

// crossing is the sample interpolated at the moment count reached x.
func crossing(s []sample, x float64) sample {
	for i := 1; i < len(s); i++ {
		a, b := s[i-1], s[i]
		if b.count < x {
			continue
		}
		if b.count == a.count {
			return b
		}
		f := (x - a.count) / (b.count - a.count)
		lerp := func(p, q float64) float64 { return p + f*(q-p) }
		return sample{at: a.at.Add(time.Duration(f * float64(b.at.Sub(a.at)))), count: x,
			cpu: lerp(a.cpu, b.cpu), mosqu: lerp(a.mosqu, b.mosqu), mosqWait: lerp(a.mosqWait, b.mosqWait), busy: lerp(a.busy, b.busy)}
	}
	return s[len(s)-1]
}

// ingestResult is one contender's run of one scenario.
type ingestResult struct {
	offered float64 // Σ over publishers of published / publish wall time
	pubCPU  float64 // publishers' CPU seconds per 100k published
	rate    float64 // msg/s, middle 80 %
	whole   float64 // msg/s from the start (go; at QoS 1 the contender's start) to the last message
	cpu     float64 // the contender's CPU seconds per 100k, middle 80 %
	mosq    float64 // Mosquitto's CPU, % of one core, middle 80 %
	mosqW   float64 // Mosquitto runnable but waiting for a CPU, % of the time, middle 80 %
	rest    float64 // cores busy with anything but the contender and Mosquitto (publishers, harness, other work on the machine), middle 80 %
	got, n  int
	mails   int // alertd: mails queued (the storm)
}

// steady computes rate and CPU over the middle 80 % of samples.
func (r *ingestResult) steady(s []sample) {
	got := s[len(s)-1].count
	if end := crossing(s, got); end.at.After(s[0].at) {
		r.whole = got / end.at.Sub(s[0].at).Seconds()
	}
	a, b := crossing(s, 0.1*got), crossing(s, 0.9*got)
	secs := b.at.Sub(a.at).Seconds()
	msgs := b.count - a.count
	if secs <= 0 || msgs <= 0 {
		return
	}
	r.rate = msgs / secs
	r.cpu = (b.cpu - a.cpu) / msgs * 100000
	r.mosq = (b.mosqu - a.mosqu) / secs * 100
	r.mosqW = (b.mosqWait - a.mosqWait) / secs * 100
	r.rest = ((b.busy - a.busy) - (b.cpu - a.cpu) - (b.mosqu - a.mosqu)) / secs
}

// contenderProc is a contender running as a process.
type contenderProc struct {
	pid   int
	count func() float64       // one scrape of its received count; < 0 when it does not answer
	ready func() (bool, error) // an error: it exited
	stop  func() error
	admin string         // alertd: its admin API (http://host:port)
	mails func() float64 // alertd only
}

// ingestEnv is what every ingest run shares.
type ingestEnv struct {
	broker     string
	mosqPid    int
	dir        string
	alertdBin  string
	o          options
	profileDir string  // non-empty: profile alertd's run into it
	alertdRate float64 // alertd's median burst rate, once measured
}

func (e *ingestEnv) startContender(kind, id string, qos byte) (*contenderProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	switch kind {
	case "bare", "bare-unordered", "raw":
		client := map[string]string{"bare": "paho-ordered", "bare-unordered": "paho", "raw": "raw"}[kind]
		c, err := startChild(childSpec{Role: "sub", Client: client, Broker: e.broker, ID: id, QoS: qos, Clean: qos == 0, HTTP: addr})
		if err != nil {
			return nil, err
		}
		ready := make(chan error, 1)
		go func() { _, err := c.expect("ready", 15*time.Second); ready <- err }()
		url := "http://" + addr + "/metrics"
		return &contenderProc{
			pid:   c.cmd.Process.Pid,
			count: func() float64 { return metricValue(url, "bench_received_total") },
			ready: func() (bool, error) {
				select {
				case err := <-ready:
					ready <- err
					return err == nil, err
				default:
					return false, nil
				}
			},
			stop: c.stop,
		}, nil
	case "alertd":
		dir := filepath.Join(e.dir, id)
		p, err := spawnAlertd(e.alertdBin, dir, alertdIngestConfig(e.broker, id, qos, dir, addr, e.o.rules), addr)
		if err != nil {
			return nil, err
		}
		url := "http://" + addr
		return &contenderProc{
			pid:   p.cmd.Process.Pid,
			count: func() float64 { return metricValue(url+"/metrics", `alertd_messages_received_total{source="mqtt"}`) },
			ready: func() (bool, error) {
				select {
				case <-p.exited:
					return false, fmt.Errorf("alertd exited at start:\n%s", p.out.String())
				default:
				}
				resp, err := http.Get(url + "/healthz")
				if err != nil {
					return false, nil
				}
				resp.Body.Close()
				return resp.StatusCode == 200, nil
			},
			stop:  p.stop,
			admin: url,
			mails: func() float64 { return metricValue(url+"/metrics", "alertd_mail_queued_total") },
		}, nil
	}
	return nil, fmt.Errorf("unknown contender %q", kind)
}

// spawnAlertd starts bin on cfg without waiting for it.
func spawnAlertd(bin, dir, cfg, admin string) (*alertdProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p := &alertdProc{cmd: exec.Command(bin, "run", "-config", path), exited: make(chan struct{}), admin: admin}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	return p, nil
}

// alertdIngestConfig is alertd under the ingest load: rules rules, ten of
// them on the stream's topics (fields and thresholds of their own, none
// breached by a calm reading; four by a storm's), the rest on topics
// nothing publishes to.
func alertdIngestConfig(broker, id string, qos byte, dir, admin string, rules int) string {
	var y strings.Builder
	fmt.Fprintf(&y, "mqtt: {broker: %q, client_id: %q, qos: %d}\nstore: {path: %q, spool: %q}\n"+
		"limits: {max_series: 250000}\nhttp: {listen: %q}\nlog: {level: error}\n",
		broker, id, qos, filepath.Join(dir, "alertd.db"), filepath.Join(dir, "spool"), admin)
	y.WriteString("defaults: {to: [ops@example.org]}\nrules:\n")
	stream := []string{
		"{name: fleet-hot, topic: \"fleet/+/telemetry\", field: temp, above: 30}",
		"{name: fleet-hot-32, topic: \"fleet/+/telemetry\", field: temp, above: 32}",
		"{name: fleet-hot-34, topic: \"fleet/+/telemetry\", field: temp, above: 34}",
		"{name: fleet-hot-36, topic: \"fleet/+/telemetry\", field: temp, above: 36}",
		"{name: fleet-frost, topic: \"fleet/+/telemetry\", field: temp, below: -10}",
		"{name: fleet-humid-90, topic: \"fleet/+/telemetry\", field: hum, above: 90}",
		"{name: fleet-humid-95, topic: \"fleet/+/telemetry\", field: hum, above: 95}",
		"{name: fleet-humid-99, topic: \"fleet/+/telemetry\", field: hum, above: 99}",
		"{name: fleet-dry-10, topic: \"fleet/+/telemetry\", field: hum, below: 10}",
		"{name: fleet-dry-5, topic: \"fleet/+/telemetry\", field: hum, below: 5}",
	}
	for i := 0; i < rules; i++ {
		if i < len(stream) {
			fmt.Fprintf(&y, "  - %s\n", stream[i])
		} else {
			fmt.Fprintf(&y, "  - {name: other%d, topic: \"site%d/+/dev%d/#\", field: v, above: %d}\n", i, i%97, i, i)
		}
	}
	return y.String()
}

// streamRules is how many of alertdIngestConfig's rules watch the stream.
func streamRules(rules int) int { return min(rules, 10) }

// publishers starts e.o.publishers publisher processes for n readings
// and waits until each is connected.
func (e *ingestEnv) startPublishers(id string, qos byte, n int, breach bool) ([]*child, error) {
	var ps []*child
	for k := range e.o.publishers {
		c, err := startChild(childSpec{Role: "pub", Client: e.o.pubClient, Broker: e.broker, ID: fmt.Sprintf("%s-pub%d", id, k),
			QoS: qos, Start: k, Stride: e.o.publishers, N: n, Devices: e.o.devices, Breach: breach})
		if err != nil {
			stopAll(ps)
			return nil, err
		}
		ps = append(ps, c)
	}
	for _, c := range ps {
		if _, err := c.expect("ready", 15*time.Second); err != nil {
			stopAll(ps)
			return nil, fmt.Errorf("publisher: %w", err)
		}
	}
	return ps, nil
}

func stopAll(ps []*child) {
	for _, c := range ps {
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// goAndWait starts every publisher at once and waits for them: the
// offered rate (the sum of each one's), and their CPU seconds per 100k
// published.
func goAndWait(ps []*child) (offered, pubCPU float64, err error) {
	for _, c := range ps {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			stopAll(ps)
			return 0, 0, err
		}
	}
	total, cpu := 0, 0.0
	for _, c := range ps {
		l, err := c.expect("done", 120*time.Second)
		if err != nil {
			stopAll(ps)
			return 0, 0, fmt.Errorf("publisher: %w", err)
		}
		var n int
		var ns int64
		if _, err := fmt.Sscanf(l, "done %d %d", &n, &ns); err != nil {
			return 0, 0, fmt.Errorf("publisher said %q", l)
		}
		if ns > 0 {
			offered += float64(n) / (float64(ns) / 1e9)
		}
		total += n
		<-c.exited
		if c.cmd.ProcessState.ExitCode() != 0 {
			return 0, 0, fmt.Errorf("publisher exited %d: %s", c.cmd.ProcessState.ExitCode(), c.stderr.String())
		}
		cpu += (c.cmd.ProcessState.UserTime() + c.cmd.ProcessState.SystemTime()).Seconds()
	}
	if total > 0 {
		pubCPU = cpu / float64(total) * 100000
	}
	return offered, pubCPU, nil
}

// runIngest measures one contender (kind) in one scenario: at QoS 0 the
// burst is published while it is subscribed; at QoS 1 its persistent
// session is created, it goes away, the backlog is queued, and it comes
// back to drain it.
func (e *ingestEnv) runIngest(kind, id string, qos byte, n int, breach bool) (r ingestResult, err error) {
	r.n = n
	var c *contenderProc
	waitReady := func() error {
		deadline := time.Now().Add(30 * time.Second)
		for {
			ok, err := c.ready()
			if err != nil {
				return err
			}
			if ok {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not get ready within 30 s", kind)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	defer func() {
		if c != nil {
			if serr := c.stop(); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	var sp *sampler
	if qos == 0 {
		if c, err = e.startContender(kind, id, qos); err != nil {
			return r, err
		}
		if err := waitReady(); err != nil {
			return r, err
		}
		ps, err := e.startPublishers(id, qos, n, breach)
		if err != nil {
			return r, err
		}
		var prof *profiler
		if e.profileDir != "" && kind == "alertd" {
			if prof, err = startProfile(c.admin, e.profileDir, e.o.profileSeconds); err != nil {
				stopAll(ps)
				return r, err
			}
		}
		sp = startSampler(e.o.sample, c.count, c.pid, e.mosqPid)
		if r.offered, r.pubCPU, err = goAndWait(ps); err != nil {
			sp.finish()
			return r, err
		}
		if prof != nil {
			defer func() {
				if perr := prof.wait(); perr != nil && err == nil {
					err = perr
				}
			}()
		}
	} else {
		if c, err = e.startContender(kind, id, qos); err != nil { // creates the persistent session
			return r, err
		}
		if err := waitReady(); err != nil {
			return r, err
		}
		err = c.stop()
		if c = nil; err != nil {
			return r, err
		}
		ps, err := e.startPublishers(id, qos, n, breach)
		if err != nil {
			return r, err
		}
		if r.offered, r.pubCPU, err = goAndWait(ps); err != nil {
			return r, err
		}
		if c, err = e.startContender(kind, id, qos); err != nil {
			return r, err
		}
		sp = startSampler(e.o.sample, c.count, c.pid, e.mosqPid)
	}
	stall := 5 * time.Second
	last, lastChange := -1.0, time.Now()
	for {
		got := sp.last().count
		if got >= float64(n) {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		}
		if time.Since(lastChange) > stall {
			break // nothing more is coming: the rest was dropped
		}
		time.Sleep(e.o.sample / 2)
	}
	s := sp.finish()
	if e.o.trace {
		for _, x := range s {
			fmt.Fprintf(os.Stderr, "  %s %6.0f ms %8.0f msgs  CPU %.2f s  Mosquitto %.2f s\n", id, float64(x.at.Sub(s[0].at).Microseconds())/1000, x.count, x.cpu-s[0].cpu, x.mosqu-s[0].mosqu)
		}
	}
	r.got = int(s[len(s)-1].count)
	if qos > 0 && r.got < n {
		return r, fmt.Errorf("%s drained %d of %d", kind, r.got, n)
	}
	r.steady(s)
	if c.mails != nil {
		r.mails = int(c.mails())
	}
	return r, nil
}

// profiler fetches a CPU profile while the burst runs and allocation
// profiles before and after it, from alertd's /debug/pprof.
type profiler struct {
	admin, dir string
	cpu        chan error
}

func fetch(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func startProfile(admin, dir string, seconds int) (*profiler, error) {
	p := &profiler{admin: admin, dir: dir, cpu: make(chan error, 1)}
	if err := fetch(admin+"/debug/pprof/allocs", filepath.Join(dir, "alertd-allocs-before.pprof")); err != nil {
		return nil, err
	}
	go func() {
		p.cpu <- fetch(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", admin, seconds), filepath.Join(dir, "alertd-cpu.pprof"))
	}()
	return p, nil
}

// wait waits for the CPU profile, then takes the allocation profile.
func (p *profiler) wait() error {
	if err := <-p.cpu; err != nil {
		return err
	}
	return fetch(p.admin+"/debug/pprof/allocs", filepath.Join(p.dir, "alertd-allocs.pprof"))
}

// profileRun runs alertd once more, with pprof, under a burst sized to
// last about -profile-seconds at the rate alertd took in the rounds, and
// returns the top of each profile (or why there is none).
func (e *ingestEnv) profileRun() (string, error) {
	if err := os.MkdirAll(e.o.profile, 0o755); err != nil {
		return "", err
	}
	n := e.o.messages
	if e.alertdRate > 0 && !e.o.profileStorm {
		n = max(n, int(e.alertdRate*float64(e.o.profileSeconds)*1.1))
	}
	e.profileDir = e.o.profile
	defer func() { e.profileDir = "" }()
	r, err := e.runIngest("alertd", "bench-profile", 0, n, e.o.profileStorm)
	if err != nil {
		note := fmt.Sprintf("\n-profile: no profile taken: %v\n", err)
		if strings.Contains(err.Error(), "pprof") {
			note += "alertd did not serve /debug/pprof/ (profile?seconds=N, allocs) on its admin listener.\n"
		}
		fmt.Fprint(os.Stderr, note)
		return note, nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nProfiles of alertd under a QoS 0 burst of %d readings (%.0f msg/s offered, %.0f msg/s taken), written to %s:\n",
		n, r.offered, r.rate, e.o.profile)
	for _, t := range []struct{ title, file, extra string }{
		{"CPU", "alertd-cpu.pprof", ""},
		{"allocated space during the burst", "alertd-allocs.pprof", "-sample_index=alloc_space"},
		{"allocated objects during the burst", "alertd-allocs.pprof", "-sample_index=alloc_objects"},
	} {
		args := []string{"tool", "pprof", "-top", "-nodecount=20"}
		if t.extra != "" {
			args = append(args, t.extra, "-base", filepath.Join(e.o.profile, "alertd-allocs-before.pprof"))
		}
		args = append(args, e.alertdBin, filepath.Join(e.o.profile, t.file))
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(&b, "\n%s: go tool pprof: %v\n", t.title, err)
			continue
		}
		fmt.Fprintf(&b, "\n%s (`go %s`):\n\n```\n%s```\n", t.title, strings.Join(args, " "), out)
	}
	return b.String(), nil
}

// ingestScenarios runs the rounds: in each, the QoS 0 burst for each
// contender (the one to go first rotating from round to round), alertd's
// storm right after its calm burst, then the QoS 1 backlog for each. It
// returns the table and the targets.
func (e *ingestEnv) ingestScenarios(ingest, storm bool) (string, []targetRow, error) {
	o := e.o
	kinds := []string{"bare", "bare-unordered", "raw", "alertd"}
	if !ingest {
		kinds = []string{"alertd"} // the storm's calm burst
	}
	results := map[string][]ingestResult{}
	var stormRatios []float64
	type run struct {
		scen, kind string
		qos        byte
		n          int
		breach     bool
	}
	for round := range o.rounds {
		var runs []run
		order := append(slices.Clone(kinds[round%len(kinds):]), kinds[:round%len(kinds)]...)
		for _, k := range order {
			runs = append(runs, run{"burst", k, 0, o.messages, false})
			if k == "alertd" && storm {
				runs = append(runs, run{"storm", k, 0, o.messages, true})
			}
		}
		if ingest {
			for _, k := range order {
				runs = append(runs, run{"backlog", k, 1, o.backlog, false})
			}
		}
		for _, x := range runs {
			id := fmt.Sprintf("bench-%s-%s-%d", x.scen, x.kind, round)
			r, err := e.runIngest(x.kind, id, x.qos, x.n, x.breach)
			if err != nil {
				return "", nil, fmt.Errorf("%s %s round %d: %w", x.kind, x.scen, round+1, err)
			}
			key := x.scen + "/" + x.kind
			results[key] = append(results[key], r)
			extra := ""
			if x.scen == "storm" {
				calm := results["burst/alertd"]
				ratio := r.whole / calm[len(calm)-1].whole // the storm's first breaches are at its start: all of it counts
				stormRatios = append(stormRatios, ratio)
				extra = fmt.Sprintf("  %.2f of calm  mails queued %d", ratio, r.mails)
			}
			fmt.Fprintf(os.Stderr, "round %d %-15s offered %7.0f msg/s  took %7.0f msg/s (whole run %7.0f)  %.2f CPU s/100k  Mosquitto %3.0f%% (+%2.0f%% waiting for a CPU)  rest of the machine %.2f cores  publishers %.2f CPU s/100k  got %d of %d  load %s%s\n",
				round+1, key, r.offered, r.rate, r.whole, r.cpu, r.mosq, r.mosqW, r.rest, r.pubCPU, r.got, r.n, loadAvg(), extra)
		}
	}
	e.alertdRate = medianOf(results["burst/alertd"], func(r ingestResult) float64 { return r.rate })

	rate := func(r ingestResult) float64 { return r.rate }
	var b strings.Builder
	fmt.Fprintf(&b, "\n| ingest: %d device topics, %d rules (%d on the stream), %d publisher processes (%s client) | contender | offered msg/s | msg/s, middle 80 %% (median) | per round | msg/s, whole run (median) | ratio to bare paho | CPU s per 100k | Mosquitto CPU %% (+ waiting for a CPU) | rest of the machine, cores | publishers' CPU s per 100k | dropped |\n"+
		"|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n", o.devices, o.rules, streamRules(o.rules), o.publishers, o.pubClient)
	names := map[string]string{"bare": "bare paho, in order (the reference)", "bare-unordered": "bare paho, OrderMatters(false) (the old reference)",
		"raw": "raw-socket reader", "alertd": "alertd binary"}
	row := func(label, scen, kind, ratio, offered string) {
		rs := results[scen+"/"+kind]
		if len(rs) == 0 {
			return
		}
		each := make([]string, len(rs))
		dropped := 0
		for i, r := range rs {
			each[i] = fmt.Sprintf("%.0f", r.rate)
			if r.n > r.got {
				dropped += r.n - r.got
			}
		}
		if offered == "" {
			offered = fmt.Sprintf("%.0f", medianOf(rs, func(r ingestResult) float64 { return r.offered }))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %s | %.0f | %s | %.2f | %.0f (+%.0f) | %.2f | %.2f | %d |\n", label, names[kind], offered, medianOf(rs, rate), strings.Join(each, " / "),
			medianOf(rs, func(r ingestResult) float64 { return r.whole }), ratio,
			medianOf(rs, func(r ingestResult) float64 { return r.cpu }), medianOf(rs, func(r ingestResult) float64 { return r.mosq }),
			medianOf(rs, func(r ingestResult) float64 { return r.mosqW }), medianOf(rs, func(r ingestResult) float64 { return r.rest }),
			medianOf(rs, func(r ingestResult) float64 { return r.pubCPU }), dropped)
	}
	ratioTo := func(scen, kind string) (float64, string) {
		ref := medianOf(results[scen+"/bare"], rate)
		if ref == 0 || len(results[scen+"/"+kind]) == 0 {
			return 0, ""
		}
		v := medianOf(results[scen+"/"+kind], rate) / ref
		return v, fmt.Sprintf("%.2f", v)
	}
	var targets []targetRow
	for _, kind := range kinds {
		_, ratio := ratioTo("burst", kind)
		row(fmt.Sprintf("QoS 0 burst, %d msgs, non-breaching", o.messages), "burst", kind, ratio, "")
	}
	if storm {
		ratio := fmt.Sprintf("%.2f of calm (whole runs)", medianOf(stormRatios, func(v float64) float64 { return v }))
		row(fmt.Sprintf("storm: the same burst, every reading breaching (4 of the stream's rules; mails queued, median: %.0f)", medianOf(results["storm/alertd"], func(r ingestResult) float64 { return float64(r.mails) })),
			"storm", "alertd", ratio, "")
	}
	for _, kind := range kinds {
		if !ingest {
			break
		}
		_, ratio := ratioTo("backlog", kind)
		queued := fmt.Sprintf("all queued (at %.0f/s) before it came back", medianOf(results["backlog/"+kind], func(r ingestResult) float64 { return r.offered }))
		row(fmt.Sprintf("QoS 1 backlog, %d msgs (acknowledged on receipt; alertd: after its commit)", o.backlog), "backlog", kind, ratio, queued)
	}
	if ingest {
		v, _ := ratioTo("burst", "alertd")
		targets = append(targets, targetRow{"QoS 0 burst: alertd / bare paho", fmt.Sprintf("%.2f×", v), "≥ 0.95×", yesNo(v >= 0.95)})
		// The offered rate is the one of the faster contender's own runs.
		faster := "bare"
		if medianOf(results["burst/alertd"], rate) > medianOf(results["burst/bare"], rate) {
			faster = "alertd"
		}
		off := medianOf(results["burst/"+faster], func(r ingestResult) float64 { return r.offered })
		fr := medianOf(results["burst/"+faster], rate)
		targets = append(targets, targetRow{"QoS 0 burst: offered / the faster contender's rate, in its runs (" + names[faster] + ")",
			fmt.Sprintf("%.2f× (%.0f / %.0f msg/s)", off/fr, off, fr), "≥ 1.2×", yesNo(off >= 1.2*fr)})
		v, _ = ratioTo("backlog", "alertd")
		targets = append(targets, targetRow{"QoS 1 backlog: alertd / bare paho", fmt.Sprintf("%.2f×", v), "≥ 0.9×", yesNo(v >= 0.9)})
		cpu := func(k string) float64 {
			return medianOf(results["burst/"+k], func(r ingestResult) float64 { return r.cpu })
		}
		targets = append(targets, targetRow{"CPU per 100k non-matching readings, alertd (bare paho in order, OrderMatters(false), raw reader)",
			fmt.Sprintf("%.2f s (%.2f, %.2f, %.2f)", cpu("alertd"), cpu("bare"), cpu("bare-unordered"), cpu("raw")),
			"lower than before", ""})
	}
	if storm {
		v := medianOf(stormRatios, func(v float64) float64 { return v })
		targets = append(targets, targetRow{"storm / calm burst, alertd", fmt.Sprintf("%.2f×", v), "≥ 0.7×", yesNo(v >= 0.7)})
	}
	fmt.Fprintf(&b, "\nOffered: the sum over the publishers of readings published / publish wall time (at QoS 0 to the broker's PINGRESP after the last reading). "+
		"The storm is compared on whole runs (go → last reading), since its first breach of each series, which commits, comes at its start. Rates, CPU (from /proc/PID/stat) "+
		"and Mosquitto's CPU (%% of one core; and, from /proc/PID/schedstat, the time it was runnable but waiting for a CPU) and the rest of the machine (all cores busy, from /proc/stat, less the contender and Mosquitto: the publishers, the harness and whatever else ran) are taken over the middle 80 %% of what arrived (10 %% → 90 %%), each contender's count read every %s "+
		"(alertd: alertd_messages_received_total from /metrics; the references: a counter on HTTP). Medians of %d rounds.\n", o.sample, o.rounds)
	return b.String(), targets, nil
}
