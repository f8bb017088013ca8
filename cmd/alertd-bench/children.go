package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// The harness's child processes: publishers and the reference
// subscribers run as processes of their own (the bench binary run again
// with childEnv set), so that several publishers can outrun any one
// contender and each contender's CPU can be read from /proc.
//
// The spec travels in an environment variable rather than a flag so the
// test binary (TestMain) can be a child as well as the harness.

const childEnv = "ALERTD_BENCH_CHILD"

type childSpec struct {
	Role   string // "pub" or "sub"
	Client string // "paho" or "raw"
	Broker string
	ID     string
	QoS    byte
	Clean  bool // sub: a clean session (QoS 0) or the persistent one (QoS 1)

	// pub: readings Start, Start+Stride, … below N, on topic i%Devices.
	Start, Stride, N, Devices int
	Breach                    bool // every reading above the fleet-hot threshold

	HTTP string // sub: serves bench_received_total on /metrics here
}

// childMain runs the child named by childEnv, if any, and exits.
func childMain() {
	v := os.Getenv(childEnv)
	if v == "" {
		return
	}
	var s childSpec
	err := json.Unmarshal([]byte(v), &s)
	if err == nil {
		switch s.Role {
		case "pub":
			err = runPublisher(s)
		case "sub":
			err = runSubscriber(s)
		default:
			err = fmt.Errorf("unknown role %q", s.Role)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "alertd-bench child %s %s: %v\n", s.Role, s.ID, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// benchPayloads are the readings of the stream: in calm, below every
// threshold of the stream's rules; in a storm, above fleet-hot's 30 (and
// the 32–36 rules').
func benchPayloads(breach bool) [][]byte {
	p := make([][]byte, 8)
	for i := range p {
		temp := 18 + float64(i)/2
		if breach {
			temp += 20
		}
		p[i] = fmt.Appendf(nil, `{"temp": %.1f, "hum": %d}`, temp, 40+i)
	}
	return p
}

func benchTopics(devices int) []string {
	t := make([]string, devices)
	for i := range t {
		t[i] = fmt.Sprintf("fleet/dev%05d/telemetry", i)
	}
	return t
}

// runPublisher connects, says "ready", waits for a line on stdin, publishes
// its share and says "done COUNT NANOSECONDS" (the publish wall time: to
// the last PUBACK at QoS 1; at QoS 0, the raw client's to the PINGRESP
// after the last PUBLISH, paho's to the last write).
func runPublisher(s childSpec) error {
	topics, payloads := benchTopics(s.Devices), benchPayloads(s.Breach)
	var publish func() (int, error)
	var closeFn func()
	switch s.Client {
	case "raw":
		rc, err := rawDial(s.Broker, s.ID, true)
		if err != nil {
			return err
		}
		closeFn = rc.disconnect
		publish = func() (int, error) { return rawPublish(rc, s, topics, payloads) }
	case "paho":
		c, err := connect(s.Broker, s.ID, true)
		if err != nil {
			return err
		}
		closeFn = func() { c.Disconnect(50) }
		publish = func() (int, error) {
			var last mqtt.Token
			n := 0
			for i := s.Start; i < s.N; i += s.Stride {
				last = c.Publish(topics[i%s.Devices], s.QoS, false, payloads[i%len(payloads)])
				if n++; s.QoS > 0 && n%1000 == 0 {
					last.Wait() // keep the in-flight window bounded
				}
			}
			if last == nil {
				return 0, nil
			}
			last.Wait()
			return n, last.Error()
		}
	default:
		return fmt.Errorf("unknown publisher client %q", s.Client)
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	t0 := time.Now()
	n, err := publish()
	took := time.Since(t0)
	if err != nil {
		return err
	}
	fmt.Printf("done %d %d\n", n, took.Nanoseconds())
	closeFn()
	return nil
}

// rawPublish writes s's share as PUBLISH packets through one buffered
// writer; at QoS 1 at most 1000 are unacknowledged.
func rawPublish(rc *rawConn, s childSpec, topics []string, payloads [][]byte) (int, error) {
	const window = 1000
	var acked atomic.Int64
	slots := make(chan struct{}, window)
	readErr := make(chan error, 1)
	want := 0
	for i := s.Start; i < s.N; i += s.Stride {
		want++
	}
	if s.QoS > 0 {
		go func() {
			var buf []byte
			for acked.Load() < int64(want) {
				first, body, err := rc.readPacket(buf)
				if err != nil {
					readErr <- err
					return
				}
				buf = body
				if first>>4 == mqttPuback {
					acked.Add(1)
					<-slots
				}
			}
			readErr <- nil
		}()
	}
	var b []byte
	id := uint16(0)
	n := 0
	for i := s.Start; i < s.N; i += s.Stride {
		if s.QoS > 0 {
			select {
			case slots <- struct{}{}:
			default:
				if err := rc.w.Flush(); err != nil { // what waits must be sent first
					return n, err
				}
				slots <- struct{}{}
			}
			if id++; id == 0 {
				id = 1
			}
		}
		b = appendPublish(b[:0], topics[i%s.Devices], payloads[i%len(payloads)], s.QoS, id)
		if _, err := rc.w.Write(b); err != nil {
			return n, err
		}
		n++
	}
	if s.QoS == 0 {
		// Written is not yet taken: Mosquitto handles a connection's
		// packets in order, so its PINGRESP says it has read every
		// PUBLISH before it (what sits in the socket buffers is not
		// offered yet).
		rc.w.Write([]byte{mqttPingreq << 4, 0})
		if err := rc.w.Flush(); err != nil {
			return n, err
		}
		_ = rc.c.SetReadDeadline(time.Now().Add(120 * time.Second))
		defer rc.c.SetReadDeadline(time.Time{})
		for {
			first, _, err := rc.readPacket(nil)
			if err != nil {
				return n, fmt.Errorf("waiting for PINGRESP: %w", err)
			}
			if first>>4 == mqttPingresp {
				return n, nil
			}
		}
	}
	if err := rc.w.Flush(); err != nil {
		return n, err
	}
	if want > 0 {
		select {
		case err := <-readErr:
			if err != nil {
				return n, err
			}
		case <-time.After(60 * time.Second):
			return n, fmt.Errorf("%d of %d acknowledged after 60 s", acked.Load(), want)
		}
	}
	return n, nil
}

// runSubscriber serves its count on s.HTTP, subscribes, says "ready",
// and runs until SIGTERM.
func runSubscriber(s childSpec) error {
	var counter atomic.Pointer[atomic.Int64]
	var stop func()
	l, err := net.Listen("tcp", s.HTTP)
	if err != nil {
		return err
	}
	go func() {
		_ = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			n := int64(0)
			if c := counter.Load(); c != nil {
				n = c.Load()
			}
			b := append([]byte("bench_received_total "), strconv.FormatInt(n, 10)...)
			w.Write(append(b, '\n'))
		}))
	}()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	switch s.Client {
	case "paho", "paho-ordered":
		b, err := newBare(s.Broker, s.ID, s.QoS, s.Clean, s.Client == "paho-ordered")
		if err != nil {
			return err
		}
		counter.Store(&b.n)
		stop = func() { b.c.Disconnect(50) }
	case "raw":
		rr, err := newRawReader(s.Broker, s.ID, s.QoS, s.Clean)
		if err != nil {
			return err
		}
		failed := make(chan error, 1)
		go func() { failed <- rr.run() }()
		select {
		case <-rr.subscribed:
		case err := <-failed:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("no SUBACK")
		}
		counter.Store(&rr.n)
		stop = func() {
			// Not through rc.w, which the reader flushes acknowledgements
			// through: one Write of a net.Conn is not interleaved with another.
			_, _ = rr.rc.c.Write([]byte{mqttDisconnect << 4, 0})
			rr.rc.c.Close()
			<-failed
		}
	default:
		return fmt.Errorf("unknown subscriber client %q", s.Client)
	}
	fmt.Println("ready")
	<-term
	stop()
	return nil
}
