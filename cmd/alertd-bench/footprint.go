package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

// footprint builds the alertd binary, gives it a store holding the state
// of `series` series (half of them firing, half silence rules' last-seen
// times), and measures start → /healthz 200 and the idle RSS.
// footprintResult is one round of the footprint scenario.
type footprintResult struct {
	start           time.Duration
	rssKiB, peakKiB int
	stormOffered    float64 // the storm's readings published per second
}

func footprint(broker, dir string, series, nrules int) (res footprintResult, err error) {
	bin := filepath.Join(dir, "alertd")
	if out, err := exec.Command("go", releaseBuild(bin)...).CombinedOutput(); err != nil {
		return res, fmt.Errorf("build: %v: %s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	httpAddr := l.Addr().String()
	l.Close()
	var y strings.Builder
	fmt.Fprintf(&y, "mqtt: {broker: %q, client_id: bench-footprint-%d}\nstore: {path: %q}\nhttp: {listen: %q}\nlog: {level: error}\n",
		broker, time.Now().UnixNano(), filepath.Join(dir, "alertd.db"), httpAddr)
	y.WriteString("defaults: {to: [ops@example.org]}\nrules:\n")
	y.WriteString("  - {name: fleet-hot, topic: \"fleet/+/telemetry\", field: temp, above: 30, repeat: 4h}\n")
	y.WriteString("  - {name: fleet-silent, topic: \"fleet/+/telemetry\", silent_for: 1h}\n")
	y.WriteString("  - {name: storm-hot, topic: \"storm/+/telemetry\", field: temp, above: 30}\n")
	for i := 2; i < nrules; i++ {
		fmt.Fprintf(&y, "  - {name: other%d, topic: \"site%d/+/dev%d/#\", field: v, above: %d}\n", i, i%97, i, i)
	}
	path := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(path, []byte(y.String()), 0o600); err != nil {
		return res, err
	}
	cfg, err := config.LoadFile(path)
	if err != nil {
		return res, err
	}
	engine, err := rules.Compile(cfg, nil)
	if err != nil {
		return res, err
	}
	hot, silent := engine.Rules()[0], engine.Rules()[1]
	db, _, err := store.Open(cfg.Store.Path)
	if err != nil {
		return res, err
	}
	now := time.Now()
	err = db.Update(func(tx *store.Tx) error {
		for i := range series / 2 {
			topic := fmt.Sprintf("fleet/dev%05d/telemetry", i)
			if err := alerts.Put(tx, &alerts.Series{Rule: hot, Topic: topic, State: alerts.Firing, Since: now, LastSeen: now,
				LastMail: now, Notified: true, Thread: fmt.Sprintf("t%d@x", i), Value: rules.Value{Text: "31.5", Num: 31.5, IsNum: true}}); err != nil {
				return err
			}
			if err := alerts.Put(tx, &alerts.Series{Rule: silent, Topic: topic, State: alerts.OK, LastSeen: now}); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		return res, err
	}
	cmd := exec.Command(bin, "run", "-config", path)
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return res, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Since(t0) > 30*time.Second {
			return res, fmt.Errorf("not healthy after 30s")
		}
		time.Sleep(2 * time.Millisecond)
	}
	res.start = time.Since(t0)
	time.Sleep(3 * time.Second) // idle
	res.rssKiB = procStatus(cmd.Process.Pid, "VmRSS:")

	// Then a storm: every one of 10 readings from each of `series`
	// devices breaches; the peak RSS of the process is what a Raspberry
	// Pi must have room for.
	pub, err := connect(broker, fmt.Sprintf("bench-storm-pub-%d", time.Now().UnixNano()), true)
	if err != nil {
		return res, err
	}
	defer pub.Disconnect(50)
	var last mqtt.Token
	p0 := time.Now()
	for i := range 10 * series {
		last = pub.Publish(fmt.Sprintf("storm/dev%05d/telemetry", i%series), 0, false, []byte(`{"temp": 39.5, "hum": 12}`))
	}
	last.Wait()
	res.stormOffered = float64(10*series) / time.Since(p0).Seconds()
	prev, still := -1.0, 0
	for still < 10 { // until received stops moving for a second
		v := metricValue("http://"+httpAddr+"/metrics", `alertd_messages_received_total{source="mqtt"}`)
		if v == prev {
			still++
		} else {
			prev, still = v, 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.peakKiB = procStatus(cmd.Process.Pid, "VmHWM:")
	return res, nil
}

// procStatus reads a kB field of /proc/PID/status.
func procStatus(pid int, field string) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// metricValue reads one sample from a Prometheus text endpoint. It asks
// for the text uncompressed: Go's client would ask for gzip, and alertd
// would spend CPU compressing every scrape that the references, which
// serve one line, do not.
func metricValue(url, sample string) float64 {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return -1
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}
