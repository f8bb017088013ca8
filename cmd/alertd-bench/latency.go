package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/alertd/alertd/internal/app"
	"github.com/alertd/alertd/internal/config"
)

// latencySink records when each alert's DATA was accepted, by device.
type latencySink struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

var deviceInSubject = regexp.MustCompile(`lat(\d+)`)

type latencySession struct{ s *latencySink }

func (x latencySession) Mail(string, *smtp.MailOptions) error { return nil }
func (x latencySession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (x latencySession) Data(r io.Reader) error {
	var b bytes.Buffer
	if _, err := io.Copy(&b, r); err != nil {
		return err
	}
	if m := deviceInSubject.FindSubmatch(b.Bytes()); m != nil {
		x.s.mu.Lock()
		if _, dup := x.s.seen[string(m[1])]; !dup {
			x.s.seen[string(m[1])] = time.Now()
		}
		x.s.mu.Unlock()
	}
	return nil
}
func (x latencySession) Reset()        {}
func (x latencySession) Logout() error { return nil }

// startLatencySink starts an SMTP server on loopback that records when
// each alert's DATA was accepted; it returns the record and the port.
func startLatencySink() (ls *latencySink, port int, stop func(), err error) {
	ls = &latencySink{seen: map[string]time.Time{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return latencySession{ls}, nil }))
	srv.Domain = "sink.localhost"
	if port, err = startSinkWith(srv); err != nil {
		return nil, 0, nil, err
	}
	return ls, port, func() { _ = srv.Close() }, nil
}

// latency publishes n breaching readings at rate per second on distinct
// topics (each one a new alert: no for, no grouping) and measures publish
// → DATA accepted.
// latencyResult is one round of the latency scenario.
type latencyResult struct {
	p50, p99 time.Duration
	offered  float64 // alerts published per second (n over the publishing time)
}

func latency(broker, dir string, n, rate int) (res latencyResult, err error) {
	ls, sk, stopSink, err := startLatencySink()
	if err != nil {
		return res, err
	}
	defer stopSink()
	y := fmt.Sprintf(`mqtt: {broker: %q, client_id: bench-latency-%d}
smtp: {host: 127.0.0.1, port: %d, security: none, auth: none, from: "alertd <alertd@example.org>"}
store: {path: %q}
http: {listen: "off"}
log: {level: error}
defaults: {to: [ops@example.org], cooldown: 0s, rate_limit: 10000/m}
rules:
  - {name: hot, topic: "lat/+/t", field: temp, above: 30, subject: "hot lat{{.Device}}"}
`, broker, time.Now().UnixNano(), sk, filepath.Join(dir, "alertd.db"))
	cfg, err := config.Load(strings.NewReader(y), filepath.Join(dir, "alertd.yaml"))
	if err != nil {
		return res, err
	}
	a, err := app.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for !a.Ready() {
		time.Sleep(5 * time.Millisecond)
	}
	pub, err := connect(broker, fmt.Sprintf("bench-latency-pub-%d", time.Now().UnixNano()), true)
	if err != nil {
		return res, err
	}
	defer pub.Disconnect(50)
	sent := make(map[string]time.Time, n)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var first time.Time
	for i := range n {
		<-tick.C
		id := fmt.Sprint(i)
		sent[id] = time.Now()
		if i == 0 {
			first = sent[id]
		}
		pub.Publish("lat/"+id+"/t", 1, false, []byte(`{"temp": 31.5}`))
	}
	if n > 1 {
		res.offered = float64(n-1) / time.Since(first).Seconds()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ls.mu.Lock()
		got := len(ls.seen)
		ls.mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("only %d of %d alerts arrived", got, n)
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
	res.p50, res.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	return res, nil
}
