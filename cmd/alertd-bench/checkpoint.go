package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	bolt "go.etcd.io/bbolt"
)

// alertRoom is the room left beside the n silence series for the alerts'
// own series, which stay firing: 100/s over two intervals and a third of
// 30 s is 7,000.
const alertRoom = 10_000

// checkpointResult is one run of the checkpoint scenario.
type checkpointResult struct {
	series        int
	establishRate float64 // heartbeats/s the broker took while the series were established
	alerts        int
	offered       float64 // alerts published per second
	p50, p99, max time.Duration
	stop          time.Duration // SIGTERM → exit
	exitCode      int
	saved         int // series whose last-seen time of the second round is in the store
}

// checkpointScenario runs the alertd binary bin with n silence series:
// it establishes them (n heartbeats on new topics, published as fast as
// the broker takes them), then publishes breaching readings on new topics
// at rate per second for two checkpoint intervals and a third, and
// measures publish → DATA accepted of each alert while the checkpoint
// writes the n new last-seen times. Then every heartbeat is published
// again (n series dirty), alertd gets SIGTERM, and the scenario measures
// the time to exit and counts the last-seen times in the store.
//
// newKeys: bin knows max_series, limits.max_series (set to n + alertRoom)
// and store.checkpoint_interval. An alertd from before them refuses the
// keys: its interval is 30 s and its limit 100,000 series, so n +
// alertRoom must fit in that.
func checkpointScenario(broker, dir, bin string, n, rate int, interval time.Duration, newKeys bool) (res checkpointResult, err error) {
	res.series = n
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, err
	}
	ls, port, stopSink, err := startLatencySink()
	if err != nil {
		return res, err
	}
	defer stopSink()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	httpAddr := l.Addr().String()
	l.Close()
	hbKeys, storeKeys, limits := "", "", ""
	if newKeys {
		hbKeys = fmt.Sprintf(", max_series: %d", n)
		storeKeys = fmt.Sprintf(", checkpoint_interval: %s", interval)
		limits = fmt.Sprintf("limits: {max_series: %d}\n", n+alertRoom)
	}
	dbPath := filepath.Join(dir, "alertd.db")
	y := fmt.Sprintf(`mqtt: {broker: %q, client_id: bench-checkpoint-%d}
smtp: {host: 127.0.0.1, port: %d, security: none, auth: none, from: "alertd <alertd@example.org>"}
store: {path: %q%s}
%shttp: {listen: %q}
log: {level: warn}
defaults: {to: [ops@example.org], cooldown: 0s, rate_limit: 10000/m}
rules:
  - {name: hb, topic: "ck/+/hb", silent_for: 1h%s}
  - {name: hot, topic: "lat/+/t", field: temp, above: 30, subject: "hot lat{{.Device}}"}
`, broker, time.Now().UnixNano(), port, dbPath, storeKeys, limits, httpAddr, hbKeys)
	cfgPath := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
		return res, err
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "run", "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = &out, &out
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return res, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if err != nil {
			err = fmt.Errorf("%w\nalertd output:\n%s", err, out.String())
		}
	}()
	metrics := "http://" + httpAddr + "/metrics"
	received := func() float64 { return metricValue(metrics, `alertd_messages_received_total{source="mqtt"}`) }
	for received() < 0 {
		if time.Since(started) > 30*time.Second {
			return res, errors.New("alertd did not serve /metrics")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for metricValue(metrics, "alertd_mqtt_connected") != 1 {
		if time.Since(started) > 30*time.Second {
			return res, errors.New("alertd did not connect to the broker")
		}
		time.Sleep(5 * time.Millisecond)
	}
	pub, err := connect(broker, fmt.Sprintf("bench-checkpoint-pub-%d", time.Now().UnixNano()), true)
	if err != nil {
		return res, err
	}
	defer pub.Disconnect(50)

	t0 := time.Now()
	if err := heartbeats(pub, n); err != nil {
		return res, err
	}
	if err := waitReceived(received, float64(n)); err != nil {
		return res, err
	}
	res.establishRate = float64(n) / time.Since(t0).Seconds()

	// Alerts until the second checkpoint after the start has had a third
	// of an interval: the first, which writes the n new series, is inside.
	sent := map[string]time.Time{}
	end := started.Add(2*interval + interval/3)
	if time.Until(end) < 2*time.Second {
		end = time.Now().Add(2 * time.Second)
	}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	a0 := time.Now()
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		id := fmt.Sprint(i)
		sent[id] = time.Now()
		pub.Publish("lat/"+id+"/t", 1, false, []byte(`{"temp": 31.5}`))
	}
	tick.Stop()
	res.alerts = len(sent)
	res.offered = float64(len(sent)) / time.Since(a0).Seconds()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ls.mu.Lock()
		got := len(ls.seen)
		ls.mu.Unlock()
		if got >= len(sent) {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("only %d of %d alerts arrived", got, len(sent))
		}
		time.Sleep(5 * time.Millisecond)
	}
	var lat []time.Duration
	ls.mu.Lock()
	for id, at := range ls.seen {
		lat = append(lat, at.Sub(sent[id]))
	}
	ls.mu.Unlock()
	slices.Sort(lat)
	res.p50, res.p99, res.max = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]

	// Every series dirty again, then SIGTERM.
	second := time.Now()
	if err := heartbeats(pub, n); err != nil {
		return res, err
	}
	if err := waitReceived(received, float64(2*n+len(sent))); err != nil {
		return res, err
	}
	time.Sleep(200 * time.Millisecond) // handled, not only received
	term := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(120 * time.Second):
		return res, errors.New("alertd did not exit 120 s after SIGTERM")
	}
	res.stop = time.Since(term)
	res.exitCode = cmd.ProcessState.ExitCode()
	res.saved, err = savedSince(dbPath, "hb", second)
	return res, err
}

// heartbeats publishes one reading on each of n silence topics, QoS 1,
// keeping at most 1000 unacknowledged.
func heartbeats(pub mqtt.Client, n int) error {
	var last mqtt.Token
	for i := range n {
		last = pub.Publish(fmt.Sprintf("ck/%06d/hb", i), 1, false, []byte("up"))
		if i%1000 == 999 {
			last.Wait()
		}
	}
	if last == nil {
		return nil
	}
	last.Wait()
	return last.Error()
}

func waitReceived(received func() float64, n float64) error {
	last, lastChange := -1.0, time.Now()
	for {
		got := received()
		if got >= n {
			return nil
		}
		if got != last {
			last, lastChange = got, time.Now()
		}
		if time.Since(lastChange) > 30*time.Second {
			return fmt.Errorf("alertd received %.0f of %.0f messages", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// savedSince counts rule's series whose stored last-seen time is at or
// after since: in the last_seen bucket (alertd with incremental
// checkpoints) or in the series' record (earlier versions), whichever
// is later.
func savedSince(path, rule string, since time.Time) (int, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	last := map[string]time.Time{}
	later := func(k []byte, at time.Time) {
		if at.After(last[string(k)]) {
			last[string(k)] = at
		}
	}
	prefix := []byte(rule + "\x00")
	err = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("alerts")); b != nil {
			c := b.Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				var rec struct {
					LastSeen time.Time `json:"last_seen"`
				}
				if json.Unmarshal(v, &rec) == nil {
					later(k, rec.LastSeen)
				}
			}
		}
		if b := tx.Bucket([]byte("last_seen")); b != nil {
			c := b.Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				if len(v) >= 8 {
					later(k, time.Unix(0, int64(binary.BigEndian.Uint64(v))))
				}
			}
		}
		return nil
	})
	n := 0
	for _, at := range last {
		if !at.Before(since) {
			n++
		}
	}
	return n, err
}

// checkpointTable renders the scenario's results, one row per contender
// and size: medians of the rounds, the max of each round, the slowest
// exit and the fewest last-seen times saved.
func checkpointTable(rows []checkpointRow, rate int, interval time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| checkpoint: alerts at %d/s on new topics while the last-seen times of N new series are checkpointed (every %s) "+
		"| N series | heartbeats/s establishing them (QoS 1, as fast as the broker takes them) | alerts offered/s | alerts per round | p50 | p99 | max (each round) | SIGTERM → exit, N series dirty (slowest) | last-seen times saved (fewest) |\n"+
		"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n", rate, interval)
	for _, r := range rows {
		if r.skipped != "" {
			fmt.Fprintf(&b, "| %s | %d | %s | | | | | | | |\n", r.contender, r.series, r.skipped)
			continue
		}
		pick := func(f func(checkpointResult) time.Duration) []time.Duration {
			v := make([]time.Duration, len(r.rounds))
			for i, c := range r.rounds {
				v[i] = f(c)
			}
			return v
		}
		median := func(v []time.Duration) time.Duration { v = slices.Clone(v); slices.Sort(v); return v[len(v)/2] }
		maxes := pick(func(c checkpointResult) time.Duration { return c.max })
		each := make([]string, len(maxes))
		for i, m := range maxes {
			each[i] = fmt.Sprintf("%.0f", ms(m))
		}
		saved, rateSum, offered, alerts, exit := r.series, 0.0, 0.0, 0, 0
		for _, c := range r.rounds {
			saved, rateSum, offered, alerts = min(saved, c.saved), rateSum+c.establishRate, offered+c.offered, alerts+c.alerts
			exit = max(exit, c.exitCode)
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f | %.1f | %d | %.2f ms | %.2f ms | %.2f ms (%s) | %.3f s (exit %d) | %d of %d |\n",
			r.contender, r.series, rateSum/float64(len(r.rounds)), offered/float64(len(r.rounds)), alerts/len(r.rounds),
			ms(median(pick(func(c checkpointResult) time.Duration { return c.p50 }))),
			ms(median(pick(func(c checkpointResult) time.Duration { return c.p99 }))),
			ms(median(maxes)), strings.Join(each, " / "),
			slices.Max(pick(func(c checkpointResult) time.Duration { return c.stop })).Seconds(), exit, saved, r.series)
	}
	fmt.Fprintf(&b, "| target | | | | | | | independent of N | ≤ 10 s | all |\n")
	return b.String()
}

type checkpointRow struct {
	contender string
	series    int
	rounds    []checkpointResult
	skipped   string // why this size was not run
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// releaseBuild is the go command line that builds ./cmd/alertd into bin as
// the Debian packages do (scripts/package.sh): paths trimmed, no symbol
// table or DWARF. What is measured is what users install: on a machine
// whose freshly written binary is in the page cache, the resident size
// follows the size of its text and read-only data.
func releaseBuild(bin string) []string {
	return []string{"build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/alertd"}
}

// buildAlertd builds ./cmd/alertd into dir.
func buildAlertd(dir string) (string, error) {
	bin := filepath.Join(dir, "alertd")
	if out, err := exec.Command("go", releaseBuild(bin)...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("build: %v: %s", err, out)
	}
	return bin, nil
}
