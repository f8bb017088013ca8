// Command alertd-bench measures alertd against the physical references: a
// bare paho subscriber that only parses the JSON, and a raw-socket MQTT
// reader (the harness's own minimal MQTT 3.1.1 client) that does the same
// without paho. It starts its own Mosquitto on a free port; in the ingest
// scenarios several publisher processes offer the stream faster than any
// contender takes it, and each contender (the two references and the
// alertd binary) runs as a process of its own, alternating within each
// round, so its rate and CPU time can be read beside the broker's. It
// prints one table (medians of the rounds, ratios within the same run)
// and can append it to BENCHMARKS.md.
//
//	go run ./cmd/alertd-bench                       # full run
//	go run ./cmd/alertd-bench -only ingest -write ""  # burst and backlog: bare paho, raw reader, alertd
//	go run ./cmd/alertd-bench -only ingest -profile /tmp/prof -write ""  # and alertd's pprof profiles under the burst
//	go run ./cmd/alertd-bench -messages 2000 -backlog 1000 -devices 100 -rules 50 -rounds 1 -write ""   # smoke
//	go run ./cmd/alertd-bench -only checkpoint -baseline-bin /tmp/old/alertd -baseline-label "alertd at abc1234"
//	go run ./cmd/alertd-bench -only smtp-ingress    # the SMTP listener against Postfix (apt-get install postfix)
//	go run ./cmd/alertd-bench -only http-ingress    # the HTTP listener against a bare net/http + bbolt server
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/alertd/alertd/internal/config"
)

type options struct {
	messages, backlog, devices, rules, rounds, mails, alerts, series int
	write                                                            string

	only                       string
	baselineBin, baselineLabel string
	checkpointEvery            time.Duration

	ingressDuration          time.Duration
	smtpClients, httpClients intList
	smtpReuse, postfix       bool
	alertdBin                string // the ingress scenarios run this alertd binary instead of building ./cmd/alertd
	bareHTTP, bareHTTPDB     string // set: serve the HTTP ingress baseline, nothing else

	publishers     int           // publisher processes of the ingest scenarios
	pubClient      string        // their MQTT client: raw or paho
	sample         time.Duration // how often the ingest scenarios read a contender's count
	profile        string        // a directory: profile the alertd binary under the burst into it
	profileSeconds int           // the CPU profile's length
	profileStorm   bool          // profile a storm (every reading breaching) instead of a calm burst
	trace          bool          // print every sample of the ingest runs
}

// intList is a flag of comma-separated counts.
type intList []int

func (l *intList) String() string {
	s := make([]string, len(*l))
	for i, n := range *l {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (l *intList) Set(v string) error {
	*l = nil
	for f := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a list of counts like 1,8", v)
		}
		*l = append(*l, n)
	}
	return nil
}

func main() {
	childMain() // a publisher or reference subscriber of the harness: runs and exits
	var o options
	flag.IntVar(&o.messages, "messages", 200000, "QoS 0 burst size")
	flag.IntVar(&o.backlog, "backlog", 100000, "QoS 1 backlog queued while the subscriber is offline")
	flag.IntVar(&o.devices, "devices", 10000, "device topics the stream spreads over")
	flag.IntVar(&o.rules, "rules", 1000, "rules loaded in alertd (ten of them watch the stream)")
	flag.IntVar(&o.mails, "mails", 10000, "outbox backlog drained to a local SMTP server")
	flag.IntVar(&o.alerts, "alerts", 1000, "alerts published at 100/s for the latency measure")
	flag.IntVar(&o.series, "series", 10000, "series whose state is in the store for the footprint measure")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per contender (medians are reported)")
	flag.StringVar(&o.write, "write", "BENCHMARKS.md", "file to append the table to (empty: print only)")
	flag.StringVar(&o.only, "only", "", "run only these scenarios, comma-separated: "+strings.Join(scenarios, ", ")+
		" (ingest: the QoS 0 burst and QoS 1 backlog for the bare paho subscriber, the raw-socket reader and alertd)")
	flag.IntVar(&o.publishers, "publishers", 4, "publisher processes offering the ingest scenarios' stream")
	flag.StringVar(&o.pubClient, "pub-client", "raw", "the publishers' MQTT client: raw (the harness's own, cheapest per message) or paho")
	flag.DurationVar(&o.sample, "sample", 200*time.Millisecond, "how often the ingest scenarios read each contender's count (and CPU)")
	flag.StringVar(&o.profile, "profile", "", "after the ingest rounds, run alertd once more under a burst and write its CPU and allocation profiles into this directory")
	flag.IntVar(&o.profileSeconds, "profile-seconds", 30, "the length of -profile's burst and CPU profile")
	flag.BoolVar(&o.profileStorm, "profile-storm", false, "-profile a storm of -messages breaching readings instead of a calm burst")
	flag.BoolVar(&o.trace, "trace", false, "print each ingest run's samples (time, count, CPU of the contender and of Mosquitto) to stderr")
	flag.StringVar(&o.baselineBin, "baseline-bin", "", "an alertd binary of an earlier commit, run through the checkpoint scenario beside this one")
	flag.StringVar(&o.baselineLabel, "baseline-label", "baseline", "how the table names -baseline-bin")
	flag.DurationVar(&o.checkpointEvery, "checkpoint-interval", 0,
		"store.checkpoint_interval in the checkpoint scenario (0: alertd's default 30s when -series is at least 10000, else 1s)")
	flag.DurationVar(&o.ingressDuration, "ingress-duration", 5*time.Second, "each closed- and open-loop measurement of the ingress scenarios")
	o.smtpClients, o.httpClients = intList{1, 8}, intList{1, 16}
	flag.Var(&o.smtpClients, "smtp-clients", "concurrent devices of the SMTP ingress scenario")
	flag.Var(&o.httpClients, "http-clients", "concurrent clients of the HTTP ingress scenario (the last is the peak whose half the open loop offers)")
	flag.BoolVar(&o.smtpReuse, "smtp-reuse", true, "also measure the SMTP ingress with one session per device (MAIL after MAIL)")
	flag.BoolVar(&o.postfix, "postfix", true, "run Postfix beside alertd in the SMTP ingress scenario (skipped with a note when it is not installed)")
	flag.StringVar(&o.alertdBin, "alertd-bin", "", "an alertd binary the ingest, storm and ingress scenarios run instead of building ./cmd/alertd (a profiling build, another commit)")
	flag.StringVar(&o.bareHTTP, "bare-http", "", "internal: serve the HTTP ingress baseline on this address")
	flag.StringVar(&o.bareHTTPDB, "bare-http-db", "", "internal: the baseline's bbolt file")
	flag.Parse()
	if o.bareHTTP != "" {
		if err := serveBareHTTP(o.bareHTTP, o.bareHTTPDB); err != nil {
			fmt.Fprintln(os.Stderr, "alertd-bench -bare-http:", err)
			os.Exit(1)
		}
		return
	}
	if o.checkpointEvery == 0 {
		o.checkpointEvery = config.DefaultCheckpointInterval
		if o.series < 10000 {
			o.checkpointEvery = time.Second // a smoke run
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "alertd-bench:", err)
		os.Exit(1)
	}
}

// scenarios are what -only may name, in the order a full run runs them.
var scenarios = []string{"ingest", "storm", "drain", "latency", "footprint", "checkpoint", "smtp-ingress", "http-ingress", "cluster"}

func run(o options) error {
	want := map[string]bool{}
	for _, s := range strings.Split(o.only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(scenarios, s) {
			return fmt.Errorf("-only %q: the scenarios are %s", s, strings.Join(scenarios, ", "))
		}
		want[s] = true
	}
	if len(want) == 0 {
		for _, s := range scenarios {
			want[s] = true
		}
	}
	dir, err := os.MkdirTemp("", "alertd-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	broker, mosqPid, stop, err := startMosquitto(dir)
	if err != nil {
		return err
	}
	defer stop()
	load0 := loadAvg()
	var b strings.Builder
	var targets []targetRow
	if want["ingest"] || want["storm"] {
		bin := o.alertdBin
		if bin == "" {
			if bin, err = buildAlertd(dir); err != nil {
				return err
			}
		}
		env := &ingestEnv{broker: broker, mosqPid: mosqPid, dir: dir, alertdBin: bin, o: o}
		table, ts, err := env.ingestScenarios(want["ingest"], want["storm"])
		if err != nil {
			return err
		}
		b.WriteString(table)
		targets = append(targets, ts...)
		if o.profile != "" {
			note, err := env.profileRun()
			if err != nil {
				return err
			}
			b.WriteString(note)
		}
	}
	if want["drain"] {
		var drainBareRates, drainRates, drain4Rates []float64
		for round := range o.rounds {
			br, err := drainBare(o.mails)
			if err != nil {
				return fmt.Errorf("drain bare: %w", err)
			}
			ar, err := drainAlertd(broker, filepath.Join(dir, fmt.Sprintf("drain%d", round)), o.mails, 1)
			if err != nil {
				return fmt.Errorf("drain alertd: %w", err)
			}
			ar4, err := drainAlertd(broker, filepath.Join(dir, fmt.Sprintf("drain4-%d", round)), o.mails, 4)
			if err != nil {
				return fmt.Errorf("drain alertd, 4 sessions: %w", err)
			}
			drainBareRates, drainRates, drain4Rates = append(drainBareRates, br), append(drainRates, ar), append(drain4Rates, ar4)
			fmt.Fprintf(os.Stderr, "round %d drain          bare %7.0f mails/s  alertd %7.0f mails/s  alertd 4 sessions %7.0f mails/s\n", round+1, br, ar, ar4)
		}
		id := func(v float64) float64 { return v }
		db, da, d4 := medianOf(drainBareRates, id), medianOf(drainRates, id), medianOf(drain4Rates, id)
		fmt.Fprintf(&b, "\n| outbox drain (in-process alertd), %d mails | offered | bare go-smtp client mails/s | alertd mails/s | ratio | target |\n|---|---|---:|---:|---:|---:|\n", o.mails)
		fmt.Fprintf(&b, "| 1 session | all %d queued at start | %.0f | %.0f | %.2f | ≥ 500/s |\n", o.mails, db, da, da/db)
		fmt.Fprintf(&b, "| smtp.max_connections: 4 | all %d queued at start | %.0f | %.0f | %.2f | ≥ 500/s |\n", o.mails, db, d4, d4/db)
	}
	if want["latency"] {
		var rs []latencyResult
		for round := range o.rounds {
			r, err := latency(broker, filepath.Join(dir, fmt.Sprintf("latency%d", round)), o.alerts, 100)
			if err != nil {
				return fmt.Errorf("latency: %w", err)
			}
			rs = append(rs, r)
			fmt.Fprintf(os.Stderr, "round %d latency        offered %.1f/s  p50 %v  p99 %v\n", round+1, r.offered, r.p50, r.p99)
		}
		p50 := medianOf(rs, func(r latencyResult) float64 { return msOf(r.p50) })
		p99 := medianOf(rs, func(r latencyResult) float64 { return msOf(r.p99) })
		fmt.Fprintf(&b, "\n| latency (in-process alertd), publish → SMTP DATA accepted, %d alerts | offered alerts/s | p50 | p99 |\n|---|---:|---:|---:|\n"+
			"| alertd (median of rounds) | %.1f | %.2f ms | %.2f ms |\n| target | 100 | ≤ 3 ms | ≤ 10 ms |\n",
			o.alerts, medianOf(rs, func(r latencyResult) float64 { return r.offered }), p50, p99)
		targets = append(targets,
			targetRow{"latency publish → DATA accepted, 100 alerts/s, p50", fmt.Sprintf("%.2f ms", p50), "≤ 3 ms", yesNo(p50 <= 3)},
			targetRow{"latency publish → DATA accepted, 100 alerts/s, p99", fmt.Sprintf("%.2f ms", p99), "≤ 10 ms", yesNo(p99 <= 10)})
	}
	if want["footprint"] {
		var rs []footprintResult
		for round := range o.rounds {
			r, err := footprint(broker, filepath.Join(dir, fmt.Sprintf("footprint%d", round)), o.series, o.rules)
			if err != nil {
				return fmt.Errorf("footprint: %w", err)
			}
			rs = append(rs, r)
			fmt.Fprintf(os.Stderr, "round %d footprint      start→healthy %v  idle RSS %d KiB  storm offered %.0f msg/s  peak RSS after a storm %d KiB\n",
				round+1, r.start, r.rssKiB, r.stormOffered, r.peakKiB)
		}
		start := medianOf(rs, func(r footprintResult) float64 { return msOf(r.start) })
		rss := medianOf(rs, func(r footprintResult) float64 { return float64(r.rssKiB) })
		fmt.Fprintf(&b, "\n| footprint, alertd binary, %d series in the store, %d rules | offered | measured | target |\n|---|---|---:|---:|\n"+
			"| start → /healthz 200 (median) | idle | %.0f ms | ≤ 300 ms |\n| idle RSS (median) | idle | %.1f MiB (%.1f MB) | ≤ 30 MB |\n"+
			"| peak RSS through a storm of %d breaching readings from %d new devices (median) | %.0f msg/s (one paho publisher) | %.1f MiB | ≤ 150 MB |\n",
			o.series, o.rules, start, rss/1024, rss*1024/1e6,
			10*o.series, o.series, medianOf(rs, func(r footprintResult) float64 { return r.stormOffered }),
			medianOf(rs, func(r footprintResult) float64 { return float64(r.peakKiB) })/1024)
		targets = append(targets, targetRow{fmt.Sprintf("idle RSS, %d series, %d rules", o.series, o.rules),
			fmt.Sprintf("%.1f MB", rss*1024/1e6), "≤ 30 MB", yesNo(rss*1024 <= 30e6)})
	}
	if want["checkpoint"] {
		ck, err := checkpoints(broker, dir, o)
		if err != nil {
			return err
		}
		b.WriteString(ck)
	}
	var ingress []string
	for _, s := range []string{"smtp-ingress", "http-ingress"} {
		if want[s] {
			ingress = append(ingress, s)
		}
	}
	if len(ingress) > 0 {
		in, err := ingressScenarios(broker, dir, o, ingress...)
		if err != nil {
			return err
		}
		b.WriteString(in)
	}
	if want["cluster"] {
		bin := o.alertdBin
		if bin == "" {
			if bin, err = buildAlertd(dir); err != nil {
				return err
			}
		}
		cl, err := clusterScenarios(dir, bin, o)
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		b.WriteString("\n" + cl)
	}
	if len(targets) > 0 {
		fmt.Fprintf(&b, "\n| target (issue 14) | measured | goal | met |\n|---|---:|---:|---|\n")
		for _, t := range targets {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.name, t.measured, t.goal, t.met)
		}
	}
	fmt.Fprintf(&b, "\nLoad average (1 min) at the start and the end of the run: %s / %s.\n", load0, loadAvg())
	table := b.String()
	fmt.Print(table)
	title := "Benchmark harness run"
	if o.only != "" {
		title += ": " + o.only
	}
	return appendSection(o, title, table)
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// targetRow is one of issue 14's targets against what this run measured.
type targetRow struct {
	name, measured, goal string
	met                  string // yes, no, or empty: not judged within one run
}

// checkpoints runs the checkpoint scenario at -series, nine and ten times
// as many, for this commit's alertd and, when given, -baseline-bin (only
// where its fixed limit of 100,000 series leaves room for the alerts).
func checkpoints(broker, dir string, o options) (string, error) {
	bin, err := buildAlertd(dir)
	if err != nil {
		return "", err
	}
	contenders := []struct {
		label, bin string
		newKeys    bool
	}{{"alertd (this commit)", bin, true}}
	if o.baselineBin != "" {
		if o.checkpointEvery != config.DefaultCheckpointInterval {
			return "", fmt.Errorf("-baseline-bin runs an alertd that may not know store.checkpoint_interval: keep -checkpoint-interval at %s", config.DefaultCheckpointInterval)
		}
		contenders = append(contenders, struct {
			label, bin string
			newKeys    bool
		}{o.baselineLabel, o.baselineBin, false})
	}
	const rate = 100
	sizes := []int{o.series, 9 * o.series, 10 * o.series}
	rows := make([]checkpointRow, 0, len(sizes)*len(contenders))
	for _, n := range sizes {
		for _, c := range contenders {
			row := checkpointRow{contender: c.label, series: n}
			if !c.newKeys && n+alertRoom > config.DefaultMaxSeries {
				row.skipped = fmt.Sprintf("not run: its fixed limit of %d series would drop the alerts", config.DefaultMaxSeries)
			}
			rows = append(rows, row)
		}
	}
	for round := range o.rounds {
		for i := range rows {
			r := &rows[i]
			c := contenders[i%len(contenders)]
			if r.skipped != "" {
				continue
			}
			res, err := checkpointScenario(broker, filepath.Join(dir, fmt.Sprintf("checkpoint-%d-%d", round, i)), c.bin, r.series, rate, o.checkpointEvery, c.newKeys)
			if err != nil {
				return "", fmt.Errorf("checkpoint %s, %d series, round %d: %w", c.label, r.series, round+1, err)
			}
			fmt.Fprintf(os.Stderr, "round %d checkpoint %-26s %6d series  p50 %v  p99 %v  max %v  SIGTERM→exit %v  saved %d\n",
				round+1, c.label, r.series, res.p50, res.p99, res.max, res.stop.Round(time.Millisecond), res.saved)
			r.rounds = append(r.rounds, res)
		}
	}
	return checkpointTable(rows, rate, o.checkpointEvery), nil
}

// appendSection appends a titled section with the command line and the
// commit to o.write (nothing when empty).
func appendSection(o options, title, table string) error {
	if o.write == "" {
		return nil
	}
	var args []string
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \"'") {
			a = fmt.Sprintf("%q", a)
		}
		args = append(args, a)
	}
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	section := fmt.Sprintf("\n## %s (%s)\n\n```\ngo run ./cmd/alertd-bench %s\n```\n\nCommit %s, %d cores.\n%s",
		title, time.Now().UTC().Format("2006-01-02"), strings.Join(args, " "), strings.TrimSpace(string(commit)), runtime.NumCPU(), table)
	f, err := os.OpenFile(o.write, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(section)
	return err
}

func connect(broker, id string, clean bool) (mqtt.Client, error) {
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(clean).
		SetConnectTimeout(5 * time.Second).SetOrderMatters(false).SetMaxResumePubInFlight(1000)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect %s: %v", id, tok.Error())
	}
	return c, nil
}

// bare is the reference: a paho subscriber that parses the JSON and
// counts, nothing else.
type bare struct {
	c mqtt.Client
	n atomic.Int64
}

func newBare(broker, id string, qos byte, clean, ordered bool) (*bare, error) {
	b := &bare{}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(clean).
		SetConnectTimeout(5 * time.Second).SetOrderMatters(ordered)
	handler := func(_ mqtt.Client, m mqtt.Message) {
		var v struct {
			Temp float64 `json:"temp"`
			Hum  float64 `json:"hum"`
		}
		if json.Unmarshal(m.Payload(), &v) == nil {
			b.n.Add(1)
		}
	}
	opts.SetDefaultPublishHandler(handler) // a resumed session's backlog may come before SUBSCRIBE
	b.c = mqtt.NewClient(opts)
	if tok := b.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("bare connect: %v", tok.Error())
	}
	if tok := b.c.Subscribe("fleet/+/telemetry", qos, handler); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("bare subscribe: %v", tok.Error())
	}
	return b, nil
}

func startMosquitto(dir string) (url string, pid int, stop func(), err error) {
	bin := "/usr/sbin/mosquitto"
	if p, err := exec.LookPath("mosquitto"); err == nil {
		bin = p
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 1000\n", port)
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command(bin, "-c", path)
	if err := cmd.Start(); err != nil {
		return "", 0, nil, fmt.Errorf("start mosquitto (apt-get install mosquitto): %w", err)
	}
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	for range 200 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "tcp://" + addr, cmd.Process.Pid, func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }, nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return "", 0, nil, errors.New("mosquitto did not start")
}
