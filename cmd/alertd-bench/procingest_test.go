package main

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// The test binary is the harness's child too: startChild runs
// os.Executable with childEnv set.
func TestMain(m *testing.M) {
	childMain()
	os.Exit(m.Run())
}

func TestRemainingLength(t *testing.T) {
	for _, n := range []int{0, 127, 128, 16383, 16384, 2097151, 2097152} {
		b := appendHeader(nil, mqttPublish<<4, n)
		got, mul := 0, 1
		for _, d := range b[1:] {
			got += int(d&0x7f) * mul
			mul *= 128
		}
		if got != n {
			t.Errorf("remaining length %d encoded as %x", n, b[1:])
		}
	}
}

// The rate and CPU come from the samples between the 10 % and 90 %
// crossings, interpolated, whatever the ramps around them.
func TestSteadyMiddle(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	s := []sample{
		{at: at(0), count: 0, cpu: 1, mosqu: 5},
		{at: at(1000), count: 0, cpu: 1, mosqu: 5}, // start-up
		{at: at(2000), count: 500, cpu: 2, mosqu: 5.5},
		{at: at(3000), count: 1000, cpu: 3, mosqu: 6},
		{at: at(9000), count: 1000, cpu: 3, mosqu: 6}, // waiting for stragglers
	}
	var r ingestResult
	r.steady(s)
	if r.rate < 499 || r.rate > 501 {
		t.Errorf("rate %.1f, want 500/s", r.rate)
	}
	if r.cpu < 199.9 || r.cpu > 200.1 { // 1 CPU s per 500 msgs
		t.Errorf("CPU %.2f s per 100k, want 200", r.cpu)
	}
	if r.mosq < 49.9 || r.mosq > 50.1 {
		t.Errorf("Mosquitto %.1f %%, want 50", r.mosq)
	}
}

// A tiny run of the multi-process ingest path: publisher processes
// (raw and paho clients), the reference subscribers as processes, QoS 0
// burst and QoS 1 backlog; everything published arrives and is counted.
func TestIngestProcesses(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/mosquitto"); err != nil {
		if _, err := exec.LookPath("mosquitto"); err != nil {
			t.Skip("mosquitto is not installed")
		}
	}
	dir := t.TempDir()
	broker, pid, stop, err := startMosquitto(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	// Few runs: under -race each child process takes a second to start.
	for _, c := range []struct {
		pub, kind string
		qos       byte
	}{{"raw", "bare", 0}, {"raw", "raw", 1}, {"paho", "bare-unordered", 1}} {
		e := &ingestEnv{broker: broker, mosqPid: pid, dir: dir,
			o: options{publishers: 2, pubClient: c.pub, devices: 50, sample: 20 * time.Millisecond}}
		n := 2000 / (1 + int(c.qos))
		r, err := e.runIngest(c.kind, "t-"+c.pub+"-"+c.kind, c.qos, n, false)
		if err != nil {
			t.Fatalf("%s publishers, %s, QoS %d: %v", c.pub, c.kind, c.qos, err)
		}
		if r.got != n || r.offered <= 0 || cpuOf(pid) < 0 {
			t.Errorf("%s publishers, %s, QoS %d: got %d of %d, offered %.0f/s", c.pub, c.kind, c.qos, r.got, n, r.offered)
		}
	}
}
