// Command alertd-bench measures alertd against the physical reference: a
// bare paho subscriber that only parses the JSON. It starts its own
// Mosquitto on a free port, runs the reference and alertd alternately
// (medians of several rounds, ratios taken within the same run), prints
// one table and can append it to BENCHMARKS.md.
//
//	go run ./cmd/alertd-bench                       # full run
//	go run ./cmd/alertd-bench -messages 2000 -backlog 1000 -devices 100 -rules 50 -rounds 1 -write ""   # smoke
//	go run ./cmd/alertd-bench -only checkpoint -baseline-bin /tmp/old/alertd -baseline-label "alertd at abc1234"
//	go run ./cmd/alertd-bench -only smtp-ingress    # the SMTP listener against Postfix (apt-get install postfix)
//	go run ./cmd/alertd-bench -only http-ingress    # the HTTP listener against a bare net/http + bbolt server
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	dto "github.com/prometheus/client_model/go"

	"github.com/alertd/alertd/internal/app"
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
	var o options
	flag.IntVar(&o.messages, "messages", 200000, "QoS 0 burst size")
	flag.IntVar(&o.backlog, "backlog", 100000, "QoS 1 backlog queued while the subscriber is offline")
	flag.IntVar(&o.devices, "devices", 10000, "device topics the stream spreads over")
	flag.IntVar(&o.rules, "rules", 1000, "rules loaded in alertd (one matches the stream)")
	flag.IntVar(&o.mails, "mails", 10000, "outbox backlog drained to a local SMTP server")
	flag.IntVar(&o.alerts, "alerts", 1000, "alerts published at 100/s for the latency measure")
	flag.IntVar(&o.series, "series", 10000, "series whose state is in the store for the footprint measure")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per contender (medians are reported)")
	flag.StringVar(&o.write, "write", "BENCHMARKS.md", "file to append the table to (empty: print only)")
	flag.StringVar(&o.only, "only", "", `run only this scenario: "checkpoint", "smtp-ingress" or "http-ingress"`)
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
	flag.StringVar(&o.alertdBin, "alertd-bin", "", "an alertd binary the ingress scenarios run instead of building ./cmd/alertd (a profiling build, another commit)")
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

func run(o options) error {
	dir, err := os.MkdirTemp("", "alertd-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	broker, stop, err := startMosquitto(dir)
	if err != nil {
		return err
	}
	defer stop()
	switch o.only {
	case "":
	case "checkpoint":
		table, err := checkpoints(broker, dir, o)
		if err != nil {
			return err
		}
		fmt.Print(table)
		return appendSection(o, "Checkpoints and alert latency", table)
	case "smtp-ingress", "http-ingress":
		table, err := ingressScenarios(broker, dir, o, o.only)
		if err != nil {
			return err
		}
		fmt.Print(table)
		title := map[string]string{"smtp-ingress": "SMTP ingress against Postfix", "http-ingress": "HTTP ingress against a bare net/http server"}[o.only]
		return appendSection(o, title, table)
	default:
		return fmt.Errorf("-only %q: the scenarios run alone are checkpoint, smtp-ingress and http-ingress", o.only)
	}

	type result struct {
		rate, cpu float64 // messages per second; CPU seconds per 100k messages
		dropped   int
	}
	results := map[string][]result{}
	for round := range o.rounds {
		for _, c := range []struct {
			name string
			sub  func(qos byte, id string) (contender, error)
		}{
			{"bare", func(qos byte, id string) (contender, error) { return newBare(broker, id, qos) }},
			{"alertd", func(qos byte, id string) (contender, error) {
				return newAlertd(broker, id, qos, filepath.Join(dir, fmt.Sprintf("r%d-%s-%d", round, id, qos)), o)
			}},
		} {
			for _, s := range []struct {
				name string
				qos  byte
				n    int
			}{{"burst", 0, o.messages}, {"backlog", 1, o.backlog}} {
				id := fmt.Sprintf("bench-%s-%s-%d", c.name, s.name, round)
				rate, cpu, dropped, err := measure(broker, c.sub, id, s.qos, s.n, o.devices)
				if err != nil {
					return fmt.Errorf("%s %s round %d: %w", c.name, s.name, round+1, err)
				}
				key := s.name + "/" + c.name
				results[key] = append(results[key], result{rate, cpu, dropped})
				fmt.Fprintf(os.Stderr, "round %d %-14s %9.0f msg/s  %.2f CPU s/100k  dropped %d\n", round+1, key, rate, cpu, dropped)
			}
		}
	}
	// Storm: every reading breaches, against the non-breaching burst of
	// the same size measured just before it.
	var stormRatios []float64
	var stormMails []int
	for round := range o.rounds {
		var calm, storm float64
		var mails int
		for _, breach := range []bool{false, true} {
			id := fmt.Sprintf("bench-storm-%d-%t", round, breach)
			sdir := filepath.Join(dir, id)
			var last *alertdRun
			start := func(qos byte, cid string) (contender, error) {
				c, err := newAlertd(broker, cid, qos, sdir, o)
				if err == nil {
					last = c.(*alertdRun)
				}
				return c, err
			}
			rate, _, dropped, err := measure(broker, start, id, 0, o.messages, o.devices, breach)
			if err != nil {
				return fmt.Errorf("storm: %w", err)
			}
			if breach {
				storm = rate
				mails = last.queued
			} else {
				calm = rate
			}
			_ = dropped
		}
		stormRatios, stormMails = append(stormRatios, storm/calm), append(stormMails, mails)
		fmt.Fprintf(os.Stderr, "round %d storm          calm %7.0f msg/s  storm %7.0f msg/s  mails queued %d\n", round+1, calm, storm, mails)
	}
	slices.Sort(stormRatios)
	slices.Sort(stormMails)
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
	slices.Sort(drain4Rates)
	var p50s, p99s []time.Duration
	for round := range o.rounds {
		p50, p99, err := latency(broker, filepath.Join(dir, fmt.Sprintf("latency%d", round)), o.alerts, 100)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		p50s, p99s = append(p50s, p50), append(p99s, p99)
		fmt.Fprintf(os.Stderr, "round %d latency        p50 %v  p99 %v\n", round+1, p50, p99)
	}
	var starts []time.Duration
	var rsses, peaks []int
	for round := range o.rounds {
		st, rss, peak, err := footprint(broker, filepath.Join(dir, fmt.Sprintf("footprint%d", round)), o.series, o.rules)
		if err != nil {
			return fmt.Errorf("footprint: %w", err)
		}
		starts, rsses, peaks = append(starts, st), append(rsses, rss), append(peaks, peak)
		fmt.Fprintf(os.Stderr, "round %d footprint      start→healthy %v  idle RSS %d KiB  peak RSS after a storm %d KiB\n", round+1, st, rss, peak)
	}
	slices.Sort(starts)
	slices.Sort(rsses)
	slices.Sort(peaks)
	slices.Sort(p50s)
	slices.Sort(p99s)
	slices.Sort(drainBareRates)
	slices.Sort(drainRates)
	median := func(rs []result, f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| scenario | bare subscriber msg/s | alertd msg/s | ratio | target | CPU s per 100k (whole harness) | alertd dropped |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range []struct{ name, target string }{{"burst", "≥ 0.9"}, {"backlog", "≥ 0.8"}} {
		bare, ad := results[s.name+"/bare"], results[s.name+"/alertd"]
		br, ar := median(bare, func(r result) float64 { return r.rate }), median(ad, func(r result) float64 { return r.rate })
		dropped := 0
		for _, r := range ad {
			dropped += r.dropped
		}
		label := map[string]string{
			"burst":   fmt.Sprintf("QoS 0 burst, %d msgs", o.messages),
			"backlog": fmt.Sprintf("QoS 1 backlog, %d msgs", o.backlog),
		}[s.name]
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.2f | %s | %.2f | %d |\n", label, br, ar, ar/br, s.target,
			median(ad, func(r result) float64 { return r.cpu }), dropped)
	}
	db, da := drainBareRates[len(drainBareRates)/2], drainRates[len(drainRates)/2]
	fmt.Fprintf(&b, "| outbox drain, %d mails (mails/s), 1 session | %.0f | %.0f | %.2f | ≥ 500/s | | |\n", o.mails, db, da, da/db)
	d4 := drain4Rates[len(drain4Rates)/2]
	fmt.Fprintf(&b, "| outbox drain, %d mails (mails/s), smtp.max_connections: 4 | %.0f | %.0f | %.2f | ≥ 500/s | | |\n", o.mails, db, d4, d4/db)
	fmt.Fprintf(&b, "| storm: %d breaching readings from %d devices (rate vs the same burst not breaching) | | | %.2f | ≥ 0.5 | | mails queued: %d (rate limit 20/h) |\n",
		o.messages, o.devices, stormRatios[len(stormRatios)/2], stormMails[len(stormMails)/2])
	fmt.Fprintf(&b, "\n| latency, publish → SMTP DATA accepted, %d alerts at 100/s | p50 | p99 |\n|---|---:|---:|\n| alertd (median of rounds) | %.2f ms | %.2f ms |\n| target | ≤ 5 ms | ≤ 25 ms |\n",
		o.alerts, float64(p50s[len(p50s)/2].Microseconds())/1000, float64(p99s[len(p99s)/2].Microseconds())/1000)
	fmt.Fprintf(&b, "\n| footprint, alertd binary, %d series in the store, %d rules | measured | target |\n|---|---:|---:|\n"+
		"| start → /healthz 200 (median) | %.0f ms | ≤ 300 ms |\n| idle RSS (median) | %.1f MiB | ≤ 30 MB |\n"+
		"| peak RSS through a storm of %d breaching readings from %d new devices (median) | %.1f MiB | ≤ 150 MB |\n",
		o.series, o.rules, float64(starts[len(starts)/2].Microseconds())/1000, float64(rsses[len(rsses)/2])/1024,
		10*o.series, o.series, float64(peaks[len(peaks)/2])/1024)
	ck, err := checkpoints(broker, dir, o)
	if err != nil {
		return err
	}
	b.WriteString(ck)
	in, err := ingressScenarios(broker, dir, o, "smtp-ingress", "http-ingress")
	if err != nil {
		return err
	}
	b.WriteString(in)
	table := b.String()
	fmt.Print(table)
	if o.write == "" {
		return nil
	}
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	section := fmt.Sprintf("\n## Ingest against a bare subscriber (%s)\n\n```\ngo run ./cmd/alertd-bench -messages %d -backlog %d -devices %d -rules %d -mails %d -alerts %d -series %d -rounds %d -ingress-duration %s -postfix=%t\n```\n\n"+
		"Commit %s, %d cores, %d device topics, %d rules loaded (one matches the stream), medians of %d rounds.\n\n%s",
		time.Now().UTC().Format("2006-01-02"), o.messages, o.backlog, o.devices, o.rules, o.mails, o.alerts, o.series, o.rounds, o.ingressDuration, o.postfix,
		strings.TrimSpace(string(commit)), runtime.NumCPU(), o.devices, o.rules, o.rounds, table)
	f, err := os.OpenFile(o.write, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(section)
	return err
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

// contender is a subscriber under test.
type contender interface {
	count() int
	stop()
}

// measure runs one scenario: for QoS 0 the contender is subscribed and
// the burst is published; for QoS 1 the contender's session is created,
// it goes away, the backlog is published, and it comes back to drain it.
func measure(broker string, start func(byte, string) (contender, error), id string, qos byte, n, devices int, breach ...bool) (rate, cpu float64, dropped int, err error) {
	pub, err := connect(broker, id+"-pub", true)
	if err != nil {
		return 0, 0, 0, err
	}
	defer pub.Disconnect(50)
	payloads := make([][]byte, 8)
	for i := range payloads {
		temp := 18 + float64(i)/2
		if len(breach) > 0 && breach[0] {
			temp += 20 // above the fleet-hot threshold: every reading breaches
		}
		payloads[i] = fmt.Appendf(nil, `{"temp": %.1f, "hum": %d}`, temp, 40+i)
	}
	publish := func() error {
		var last mqtt.Token
		for i := range n {
			last = pub.Publish(fmt.Sprintf("fleet/dev%05d/telemetry", i%devices), qos, false, payloads[i%len(payloads)])
			if qos > 0 && i%1000 == 999 {
				last.Wait() // keep the publisher's in-flight window bounded
			}
		}
		last.Wait()
		return last.Error()
	}
	var c contender
	if qos == 0 {
		if c, err = start(qos, id); err != nil {
			return 0, 0, 0, err
		}
	} else {
		if c, err = start(qos, id); err != nil { // creates the persistent session
			return 0, 0, 0, err
		}
		c.stop()
		if err := publish(); err != nil {
			return 0, 0, 0, err
		}
	}
	cpu0 := cpuSeconds()
	t0 := time.Now()
	if qos == 0 {
		if err := publish(); err != nil {
			return 0, 0, 0, err
		}
	} else if c, err = start(qos, id); err != nil {
		return 0, 0, 0, err
	}
	defer c.stop()
	last, lastChange := 0, time.Now()
	for c.count() < n {
		if got := c.count(); got != last {
			last, lastChange = got, time.Now()
		}
		if time.Since(lastChange) > 5*time.Second {
			break // nothing more is coming: the rest was dropped
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(t0)
	got := c.count()
	if qos == 0 {
		// Every reading the broker had time to send counts; a QoS 0 loss
		// on either side shows as dropped.
		dropped = n - got
	} else if got < n {
		return 0, 0, 0, fmt.Errorf("drained %d of %d", got, n)
	}
	return float64(got) / elapsed.Seconds(), (cpuSeconds() - cpu0) / float64(got) * 100000, dropped, nil
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
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

func newBare(broker, id string, qos byte) (contender, error) {
	b := &bare{}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(qos == 0).
		SetConnectTimeout(5 * time.Second).SetOrderMatters(false)
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

func (b *bare) count() int { return int(b.n.Load()) }
func (b *bare) stop()      { b.c.Disconnect(50) }

// alertdRun is alertd in-process with its whole pipeline, writing any
// mail to a spool.
type alertdRun struct {
	a      *app.App
	cancel context.CancelFunc
	done   chan error
	queued int // mails queued, read at stop
}

// queuedMails reads alertd_mail_queued_total.
func queuedMails(a *app.App) float64 {
	var m dto.Metric
	if err := a.Metrics().MailQueued.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

func newAlertd(broker, id string, qos byte, dir string, o options) (contender, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var y strings.Builder
	fmt.Fprintf(&y, "mqtt: {broker: %q, client_id: %q, qos: %d}\nstore: {path: %q}\nhttp: {listen: \"off\"}\nlog: {level: error}\n",
		broker, id, qos, filepath.Join(dir, "alertd.db"))
	y.WriteString("defaults: {to: [ops@example.org]}\nrules:\n")
	y.WriteString("  - {name: fleet-hot, topic: \"fleet/+/telemetry\", field: temp, above: 30}\n")
	for i := 1; i < o.rules; i++ {
		fmt.Fprintf(&y, "  - {name: other%d, topic: \"site%d/+/dev%d/#\", field: v, above: %d}\n", i, i%97, i, i)
	}
	cfg, err := config.Load(strings.NewReader(y.String()), filepath.Join(dir, "alertd.yaml"))
	if err != nil {
		return nil, err
	}
	a, err := app.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &alertdRun{a: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	deadline := time.Now().Add(15 * time.Second)
	for !a.Ready() {
		if time.Now().After(deadline) {
			cancel()
			return nil, errors.New("alertd did not subscribe")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r, nil
}

func (r *alertdRun) count() int { return int(r.a.Handled()) }
func (r *alertdRun) stop() {
	r.queued = int(queuedMails(r.a))
	r.cancel()
	<-r.done
}

func startMosquitto(dir string) (url string, stop func(), err error) {
	bin := "/usr/sbin/mosquitto"
	if p, err := exec.LookPath("mosquitto"); err == nil {
		bin = p
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 1000\n", port)
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "-c", path)
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start mosquitto (apt-get install mosquitto): %w", err)
	}
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	for range 200 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "tcp://" + addr, func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }, nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return "", nil, errors.New("mosquitto did not start")
}
