package main

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The HTTP ingress scenario: POST /v1/events/<topic> to the alertd
// binary's device listener, against a bare net/http server doing the
// least work that keeps the same promise (the baseline, -bare-http: this
// harness's own binary run as a second process).
//
// Two kinds of request, as a device sends them:
//
//   - alert: {"temp": 31.5} on a topic never seen before. In alertd each is
//     a new alert of the rule hot (above 30): the series' state and its
//     mail are committed in one bbolt Batch before the 202, and the mail
//     is then relayed to a local sink by alertd's mailer (one session,
//     one fsync'd removal per mail, as in production). The baseline
//     parses the JSON and puts the body into bbolt in a Batch of its own
//     (same options as alertd's store: no freelist sync, 2 ms batch
//     delay) before its 202.
//   - reading: {"temp": 21.5}, one of 1,000 topics. Nothing changes state,
//     so alertd has nothing to commit: the 202 comes after the rules. The
//     baseline parses and answers.
//
// Offered load: closed loops of N clients (each with its own keep-alive
// connection, request after request for -ingress-duration), then an open
// loop of alert requests at half the peak alertd reached in the round's
// closed loop at the largest N, offered to both (latency measured from
// when each request was due). Between measurements, alertd's outbox is
// let drain, so one measurement's mail is not another's load.

const benchToken = "bench-token-0123456789"

type httpKind struct {
	name string
	body func(id int64) (topic string, body []byte)
}

var httpKinds = []httpKind{
	{"alert", func(id int64) (string, []byte) { return fmt.Sprintf("bench/a%d/t", id), []byte(`{"temp": 31.5}`) }},
	{"reading", func(id int64) (string, []byte) {
		return fmt.Sprintf("bench/r%d/t", id%1000), []byte(`{"temp": 21.5}`)
	}},
}

// httpTarget is a running contender.
type httpTarget struct {
	name   string
	base   string // http://host:port
	client *http.Client
	alerts atomic.Int64 // alert requests answered 202
}

func (t *httpTarget) post(kind httpKind, id int64) error {
	topic, body := kind.body(id)
	req, err := http.NewRequest(http.MethodPost, t.base+"/v1/events/"+topic, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+benchToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if kind.name == "alert" {
		t.alerts.Add(1)
	}
	return nil
}

func newHTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: 60 * time.Second, DisableCompression: true,
	}}
}

func httpIngress(broker, dir, bin string, o options) (string, error) {
	results := map[string][]loadResult{} // contender/row
	var rows []string
	for _, k := range httpKinds {
		for _, n := range o.httpClients {
			rows = append(rows, fmt.Sprintf("%s, %d client(s)", k.name, n))
		}
	}
	const openRow = "alert, open loop at half alertd's peak"
	rows = append(rows, openRow)
	load0 := loadAvg()
	var ids atomic.Int64
	for round := range o.rounds {
		sink, err := startArrivals()
		if err != nil {
			return "", err
		}
		rdir := filepath.Join(dir, fmt.Sprintf("http-r%d", round))
		ad, stopAlertd, err := startAlertdHTTP(bin, broker, filepath.Join(rdir, "alertd"), sink.port)
		if err != nil {
			sink.srv.Close()
			return "", fmt.Errorf("http-ingress: start alertd: %w", err)
		}
		bare, stopBare, err := startBareHTTP(filepath.Join(rdir, "bare"))
		if err != nil {
			_ = stopAlertd()
			sink.srv.Close()
			return "", fmt.Errorf("http-ingress: start the baseline: %w", err)
		}
		targets := []*httpTarget{ad, bare}
		if round%2 == 1 {
			targets = []*httpTarget{bare, ad} // who goes first alternates
		}
		settle := func() error {
			// alertd's mail of the last measurement is out before the next.
			if !sink.waitCount(ad.alerts.Load(), 20*time.Second) {
				return fmt.Errorf("alertd's outbox did not drain: %d of %d mails upstream", sink.n.Load(), ad.alerts.Load())
			}
			return nil
		}
		measure := func(t *httpTarget, row string, run func() loadResult) error {
			if err := settle(); err != nil {
				return err
			}
			r := run()
			results[t.name+"/"+row] = append(results[t.name+"/"+row], r)
			extra := ""
			if r.offered > 0 {
				extra = fmt.Sprintf("  offered %.0f/s, at most %d in flight", r.offered, r.inFlight)
			}
			fmt.Fprintf(os.Stderr, "round %d http-ingress %-6s %-40s %7.0f req/s  p50 %6.2f ms  p99 %6.2f ms  max %7.2f ms  errors %d%s\n",
				round+1, t.name, row, r.rate, msOf(r.lat.p50), msOf(r.lat.p99), msOf(r.lat.max), r.errs, extra)
			return nil
		}
		var peak float64
		for _, k := range httpKinds {
			for _, n := range o.httpClients {
				row := fmt.Sprintf("%s, %d client(s)", k.name, n)
				for _, t := range targets {
					err := measure(t, row, func() loadResult { return httpClosed(t, k, n, o.ingressDuration, &ids) })
					if err != nil {
						return "", err
					}
					if t == ad && k.name == "alert" && n == o.httpClients[len(o.httpClients)-1] {
						rs := results[t.name+"/"+row]
						peak = rs[len(rs)-1].rate
					}
				}
			}
		}
		for _, t := range targets {
			err := measure(t, openRow, func() loadResult { return httpOpen(t, httpKinds[0], peak/2, o.ingressDuration, &ids) })
			if err != nil {
				return "", err
			}
		}
		if err := settle(); err != nil {
			return "", err
		}
		stopBare()
		err = stopAlertd()
		sink.srv.Close()
		if err != nil {
			return "", fmt.Errorf("http-ingress: %w", err)
		}
	}
	return httpTable(rows, openRow, results, o) +
		fmt.Sprintf("\nLoad average (1 min) at the start and the end of the scenario: %s / %s.\n", load0, loadAvg()), nil
}

// httpClosed warms up with 10 requests per client (the connections are
// opened), then runs the closed loop.
func httpClosed(t *httpTarget, k httpKind, clients int, d time.Duration, ids *atomic.Int64) loadResult {
	op := func(int) error { return t.post(k, ids.Add(1)) }
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range 10 {
				_ = op(0)
			}
		})
	}
	wg.Wait()
	lat, errs, firstErr, elapsed := closedLoop(clients, d, op)
	r := loadResult{ok: len(lat), errs: errs, lat: summarize(lat)}
	if firstErr != nil {
		r.firstErr = firstErr.Error()
	}
	if elapsed > 0 {
		r.rate = float64(len(lat)) / elapsed.Seconds()
	}
	return r
}

func httpOpen(t *httpTarget, k httpKind, rate float64, d time.Duration, ids *atomic.Int64) loadResult {
	rate = max(rate, 10)
	lat, errs, firstErr, most := openLoop(rate, d, func() error { return t.post(k, ids.Add(1)) })
	r := loadResult{ok: len(lat), errs: errs, lat: summarize(lat), offered: rate, inFlight: most}
	if firstErr != nil {
		r.firstErr = firstErr.Error()
	}
	r.rate = float64(len(lat)) / d.Seconds()
	return r
}

func httpTable(rows []string, openRow string, results map[string][]loadResult, o options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| HTTP ingress: POST /v1/events/<topic>, keep-alive, %s per measurement | contender | offered | requests/s (202), median | per round | alertd / bare | p50 | p99 | max (worst round) | errors |\n"+
		"|---|---|---|---:|---|---:|---:|---:|---:|---:|\n", o.ingressDuration)
	rate := func(r loadResult) float64 { return r.rate }
	for _, row := range rows {
		ref := medianOf(results["bare/"+row], rate)
		label, offered := row, "closed loop: as fast as answered"
		if row == openRow {
			offered = fmt.Sprintf("%.0f/s (open loop)", medianOf(results["alertd/"+row], func(r loadResult) float64 { return r.offered }))
		}
		for _, name := range []string{"alertd", "bare"} {
			rs := results[name+"/"+row]
			each := make([]string, len(rs))
			worst := time.Duration(0)
			for i, r := range rs {
				each[i] = fmt.Sprintf("%.0f", r.rate)
				worst = max(worst, r.lat.max)
			}
			ratio := ""
			if name == "alertd" && ref > 0 {
				ratio = fmt.Sprintf("%.2f", medianOf(rs, rate)/ref)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %s | %s | %.2f ms | %.2f ms | %.2f ms | %s |\n", label, name, offered, medianOf(rs, rate), strings.Join(each, " / "), ratio,
				medianOf(rs, func(r loadResult) float64 { return msOf(r.lat.p50) }),
				medianOf(rs, func(r loadResult) float64 { return msOf(r.lat.p99) }), msOf(worst), errNote(rs))
		}
	}
	fmt.Fprintf(&b, "| target | alertd | | | | | | ≤ 25 ms at half the peak | | 0 |\n")
	return b.String()
}

// startAlertdHTTP runs the alertd binary with its device HTTP listener.
func startAlertdHTTP(bin, broker, dir string, sinkPort int) (*httpTarget, func() error, error) {
	listen, err := freeAddr()
	if err != nil {
		return nil, nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, nil, err
	}
	cfg := fmt.Sprintf(`mqtt: {broker: %q, client_id: bench-http-ingress-%d}
smtp: {host: 127.0.0.1, port: %d, security: none, auth: none, from: "alertd <alertd@example.org>"}
store: {path: %q}
http: {listen: %q}
log: {level: warn}
limits: {max_series: 1000000}
ingress:
  relay_to: [ops@example.org]
  http: {listen: %q, tokens: [%q]}
defaults: {to: [ops@example.org], cooldown: 0s, rate_limit: 10000/s}
rules:
  - {name: hot, topic: "bench/+/t", field: temp, above: 30, max_series: 1000000}
`, broker, time.Now().UnixNano(), sinkPort, filepath.Join(dir, "alertd.db"), admin, listen, benchToken)
	p, err := startAlertdBin(bin, dir, cfg, admin, listen)
	if err != nil {
		return nil, nil, err
	}
	t := &httpTarget{name: "alertd", base: "http://" + listen, client: newHTTPClient()}
	return t, func() error {
		queued := p.metric("alertd_mail_queued_total")
		dropped := p.metric(`alertd_messages_dropped_total{reason="too_many_series"}`)
		err := p.stop()
		switch {
		case err != nil:
			return err
		case queued != float64(t.alerts.Load()):
			return fmt.Errorf("alertd answered 202 to %d alert requests but queued %.0f mails (series dropped: %.0f)", t.alerts.Load(), queued, dropped)
		}
		return nil
	}, nil
}

// startBareHTTP runs this binary as the baseline server.
func startBareHTTP(dir string) (*httpTarget, func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, nil, err
	}
	var out bytes.Buffer
	cmd := exec.Command(self, "-bare-http", addr, "-bare-http-db", filepath.Join(dir, "bare.db"))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() { _ = cmd.Process.Kill(); <-exited }
	deadline := time.Now().Add(10 * time.Second)
	for !dialable(addr) {
		select {
		case <-exited:
			return nil, nil, fmt.Errorf("the baseline exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, errors.New("the baseline did not listen within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &httpTarget{name: "bare", base: "http://" + addr, client: newHTTPClient()}, stop, nil
}

// serveBareHTTP serves the baseline on addr until the process is killed.
func serveBareHTTP(addr, dbPath string) error {
	h, db, err := newBareHTTP(dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
	return srv.ListenAndServe()
}

// bareBucket holds the baseline's committed readings.
var bareBucket = []byte("events")

// newBareHTTP is the baseline: a handler that checks the bearer token,
// reads the body (at most 64 KiB), parses it as JSON and, for a reading
// above 30, puts it into bbolt in a Batch (one fsync shared by the
// requests that arrive together) before answering 202.
func newBareHTTP(dbPath string) (http.Handler, *bolt.DB, error) {
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, nil, err
	}
	db.MaxBatchDelay = 2 * time.Millisecond // alertd's store's
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists(bareBucket); return err }); err != nil {
		db.Close()
		return nil, nil, err
	}
	want := []byte("Bearer " + benchToken)
	var seq atomic.Uint64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		topic, ok := strings.CutPrefix(r.URL.Path, "/v1/events/")
		switch {
		case r.Method != http.MethodPost:
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		case !ok || topic == "":
			http.Error(w, "no topic", http.StatusNotFound)
			return
		case subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1:
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			http.Error(w, "too big", http.StatusRequestEntityTooLarge)
			return
		}
		var v struct {
			Temp float64 `json:"temp"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			http.Error(w, "bad JSON", http.StatusBadRequest)
			return
		}
		id := seq.Add(1)
		if v.Temp > 30 {
			key := fmt.Appendf(nil, "%s\x00%020d", topic, id)
			if err := db.Batch(func(tx *bolt.Tx) error { return tx.Bucket(bareBucket).Put(key, body) }); err != nil {
				http.Error(w, "store failed", http.StatusServiceUnavailable)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "{\"id\":\"ev-%d\"}\n", id)
	})
	return h, db, nil
}
