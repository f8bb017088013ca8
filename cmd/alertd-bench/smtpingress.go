package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// The SMTP ingress scenario: devices hand mail to alertd's SMTP listener,
// which commits each to its outbox before the 250 and relays it upstream;
// the reference is Postfix doing the same job on the same machine.
//
// Offered load: a closed loop of N clients, each a device at its own
// loopback address (127.0.0.10, .11, …, so each has its own rate window
// in alertd, as real devices would), sending one mail after another for
// -ingress-duration. Realistic devices open one connection per mail
// (connect, EHLO, MAIL, RCPT, DATA, QUIT): that is the main measure. The
// reused session (one connection per client, MAIL … DATA again and again)
// shows what is left when the connection set-up is taken away.
//
// Measured per mail: start (the dial, or MAIL on a reused session) → 250
// after DATA, and start → the upstream sink accepted the relayed copy.
// The accept rate is the mails that got their 250 divided by the time to
// the last reply. Every mail has a subject and text of its own, and
// alertd runs with ingress.cooldown 0s and ingress.rate_limit 10000/s, so
// neither its dedupe nor its rate limit holds anything back.

type smtpLevel struct {
	clients int
	reuse   bool
}

func (l smtpLevel) String() string {
	if l.reuse {
		return fmt.Sprintf("reused session, %d client(s)", l.clients)
	}
	return fmt.Sprintf("one connection per mail, %d client(s)", l.clients)
}

// smtpContender is a mail server under test, started once per round.
type smtpContender struct {
	name  string
	start func(dir string, sinkPort int) (addr string, stop func() error, err error)
}

func smtpIngress(broker, dir, bin string, o options) (string, error) {
	var levels []smtpLevel
	for _, reuse := range []bool{false, true} {
		if reuse && !o.smtpReuse {
			continue
		}
		for _, n := range o.smtpClients {
			levels = append(levels, smtpLevel{n, reuse})
		}
	}
	contenders := []smtpContender{{"alertd", func(d string, sinkPort int) (string, func() error, error) {
		return startAlertdSMTP(bin, broker, d, sinkPort)
	}}}
	var note string
	switch why := postfixMissing(); {
	case !o.postfix:
		note = "Postfix not run (-postfix=false): alertd alone, no ratio."
	case why != "":
		note = "Postfix not run: " + why + ". alertd alone, no ratio."
	default:
		contenders = append(contenders, smtpContender{"Postfix", func(d string, sinkPort int) (string, func() error, error) {
			p, err := startPostfix(d, sinkPort)
			if err != nil {
				return "", nil, err
			}
			return p.addr, func() error {
				// Everything arrived upstream; qmgr may not have removed
				// the last queue files yet.
				left := p.queued()
				for deadline := time.Now().Add(10 * time.Second); left > 0 && time.Now().Before(deadline); left = p.queued() {
					time.Sleep(50 * time.Millisecond)
				}
				p.stop()
				if left > 0 {
					return fmt.Errorf("Postfix still had %d mails queued at stop: %s", left, p.log())
				}
				return nil
			}, nil
		}})
	}
	if note != "" {
		fmt.Fprintln(os.Stderr, "smtp-ingress:", note)
	}
	results := map[string][]loadResult{} // contender/level
	load0 := loadAvg()
	var ids atomic.Int64
	for round := range o.rounds {
		order := slices.Clone(contenders)
		for i := range order {
			c := order[(i+round)%len(order)] // who goes first alternates
			sink, err := startArrivals()
			if err != nil {
				return "", err
			}
			cdir := filepath.Join(dir, fmt.Sprintf("smtp-%s-r%d", strings.ToLower(c.name), round))
			addr, stop, err := c.start(cdir, sink.port)
			if err != nil && c.name == "Postfix" {
				// Installed but not runnable here: say so, measure alertd.
				sink.srv.Close()
				note = fmt.Sprintf("Postfix could not be started in round %d, so it was left out from there on: %v", round+1, err)
				fmt.Fprintln(os.Stderr, "smtp-ingress:", note)
				contenders = contenders[:1]
				continue
			}
			if err != nil {
				sink.srv.Close()
				return "", fmt.Errorf("smtp-ingress: start %s: %w", c.name, err)
			}
			for _, lv := range levels {
				r := smtpMeasure(addr, sink, lv, o.ingressDuration, &ids)
				key := c.name + "/" + lv.String()
				results[key] = append(results[key], r)
				fmt.Fprintf(os.Stderr, "round %d smtp-ingress %-7s %-37s %5.0f mails/s  250 p50 %6.2f ms p99 %6.2f ms  relayed %5.0f/s  upstream p50 %7.2f ms p99 %7.2f ms  refused %d  not arrived %d\n",
					round+1, c.name, lv, r.rate, msOf(r.lat.p50), msOf(r.lat.p99), r.relayed, msOf(r.e2e.p50), msOf(r.e2e.p99), r.errs, r.lost)
			}
			err = stop()
			sink.srv.Close()
			if err != nil {
				return "", fmt.Errorf("smtp-ingress: %s: %w", c.name, err)
			}
		}
	}
	note = strings.TrimSpace(fmt.Sprintf("Load average (1 min) at the start and the end of the scenario: %s / %s. %s", load0, loadAvg(), note))
	return smtpTable(levels, results, o, note), nil
}

func smtpTable(levels []smtpLevel, results map[string][]loadResult, o options, note string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| SMTP ingress: closed loop, N devices each sending mail after mail for %s, relayed to a local sink | contender | offered | mails/s accepted (250 after DATA), median | per round | alertd / Postfix | start → 250 p50 | p99 | relayed upstream/s (start → last arrival) | start → upstream accepted p50 | p99 | refused | not arrived upstream |\n"+
		"|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n", o.ingressDuration)
	rate := func(r loadResult) float64 { return r.rate }
	for _, lv := range levels {
		ref := medianOf(results["Postfix/"+lv.String()], rate)
		for _, name := range []string{"alertd", "Postfix"} {
			rs := results[name+"/"+lv.String()]
			if len(rs) == 0 {
				continue
			}
			each := make([]string, len(rs))
			lost := 0
			for i, r := range rs {
				each[i] = fmt.Sprintf("%.0f", r.rate)
				lost += r.lost
			}
			ratio := ""
			if name == "alertd" && ref > 0 {
				ratio = fmt.Sprintf("%.2f", medianOf(rs, rate)/ref)
			}
			lat := func(f func(loadResult) time.Duration) string {
				return fmt.Sprintf("%.2f ms", medianOf(rs, func(r loadResult) float64 { return msOf(f(r)) }))
			}
			fmt.Fprintf(&b, "| %s | %s | closed loop: as fast as accepted | %.0f | %s | %s | %s | %s | %.0f | %s | %s | %s | %d |\n", lv, name, medianOf(rs, rate), strings.Join(each, " / "), ratio,
				lat(func(r loadResult) time.Duration { return r.lat.p50 }), lat(func(r loadResult) time.Duration { return r.lat.p99 }),
				medianOf(rs, func(r loadResult) float64 { return r.relayed }),
				lat(func(r loadResult) time.Duration { return r.e2e.p50 }), lat(func(r loadResult) time.Duration { return r.e2e.p99 }),
				errNote(rs), lost)
		}
	}
	if note != "" {
		fmt.Fprintf(&b, "\n%s\n", note)
	}
	return b.String()
}

// startAlertdSMTP runs the alertd binary with its SMTP listener relaying
// to the sink.
func startAlertdSMTP(bin, broker, dir string, sinkPort int) (string, func() error, error) {
	listen, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	cfg := fmt.Sprintf(`mqtt: {broker: %q, client_id: bench-smtp-ingress-%d}
smtp: {host: 127.0.0.1, port: %d, security: none, auth: none, from: "alertd <alertd@example.org>"}
store: {path: %q}
http: {listen: %q}
log: {level: warn}
ingress:
  relay_to: [ops@example.org]
  cooldown: 0s
  rate_limit: 10000/s
  smtp: {listen: %q, hostname: alertd.bench.localhost}
defaults: {to: [ops@example.org]}
rules:
  - {name: unrelated, topic: "nothing/+/here", field: v, above: 1}
`, broker, time.Now().UnixNano(), sinkPort, filepath.Join(dir, "alertd.db"), admin, listen)
	p, err := startAlertdBin(bin, dir, cfg, admin, listen)
	if err != nil {
		return "", nil, err
	}
	return listen, func() error {
		queued := p.metric("alertd_mail_queued_total")
		sent := p.metric("alertd_mail_sent_total")
		err := p.stop()
		if err == nil && sent < queued {
			err = fmt.Errorf("alertd sent %.0f of the %.0f mails it queued", sent, queued)
		}
		return err
	}, nil
}

// deviceMail is mail id from device c: a subject and a text of its own.
func deviceMail(id int64, c int) []byte {
	return fmt.Appendf(nil, "From: Cellar sensor %d <cellar%d@casa.lan>\r\nTo: ops@example.org\r\n"+
		"Subject: Cellar %d water high bench-id-%d\r\nDate: %s\r\nMessage-ID: <m%d.c%d@casa.lan>\r\n\r\n"+
		"Water level %d cm at cellar %d, reading %d.\r\n",
		c, c, c, id, time.Now().Format(time.RFC1123Z), id, c, 10+id%90, c, id)
}

// deviceDialer binds client c to a loopback address of its own.
func deviceDialer(c int) *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+c%240))}}
}

func dialDevice(addr string, c int) (*smtp.Client, net.Conn, error) {
	conn, err := deviceDialer(c).Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	cl := smtp.NewClient(conn)
	if err := cl.Hello(fmt.Sprintf("cellar%d.casa.lan", c)); err != nil {
		cl.Close()
		return nil, nil, err
	}
	return cl, conn, nil
}

// smtpMeasure warms the server up with a few mails per client, then runs
// the closed loop at lv and waits for the mails upstream.
func smtpMeasure(addr string, sink *arrivals, lv smtpLevel, d time.Duration, ids *atomic.Int64) loadResult {
	type sent struct {
		id              int64
		start, accepted time.Time
	}
	var mu sync.Mutex
	var done []sent
	sessions := make([]*smtp.Client, lv.clients)
	conns := make([]net.Conn, lv.clients)
	op := func(c int) error {
		id := ids.Add(1)
		msg := deviceMail(id, c)
		from := fmt.Sprintf("cellar%d@casa.lan", c)
		start := time.Now()
		cl, conn := sessions[c], conns[c]
		if cl == nil {
			var err error
			if cl, conn, err = dialDevice(addr, c); err != nil {
				return err
			}
		}
		_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
		err := cl.SendMail(from, []string{"ops@example.org"}, bytes.NewReader(msg))
		accepted := time.Now()
		if err == nil {
			mu.Lock()
			done = append(done, sent{id, start, accepted})
			mu.Unlock()
		}
		if lv.reuse && err == nil {
			sessions[c], conns[c] = cl, conn
			return nil
		}
		sessions[c], conns[c] = nil, nil
		if err == nil {
			err = cl.Quit()
		}
		cl.Close()
		return err
	}
	// Warm-up: Postfix forks its smtpd and cleanup processes on demand,
	// alertd's first commits grow its file; neither is measured.
	var wg sync.WaitGroup
	for c := range lv.clients {
		wg.Go(func() {
			for range 3 {
				_ = op(c)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	warm := make([]int64, len(done))
	for i, s := range done {
		warm[i] = s.id
	}
	done = done[:0]
	mu.Unlock()
	sink.waitFor(warm, 20*time.Second)

	t0 := time.Now()
	_, errs, firstErr, elapsed := closedLoop(lv.clients, d, op)
	for c, cl := range sessions {
		if cl != nil {
			_ = cl.Quit()
			cl.Close()
			sessions[c] = nil
		}
	}
	r := loadResult{ok: len(done), errs: errs}
	if firstErr != nil {
		r.firstErr = firstErr.Error()
	}
	if elapsed > 0 {
		r.rate = float64(len(done)) / elapsed.Seconds()
	}
	want := make([]int64, len(done))
	lat := make([]time.Duration, len(done))
	for i, s := range done {
		want[i], lat[i] = s.id, s.accepted.Sub(s.start)
	}
	r.lat = summarize(lat)
	arrived := sink.waitFor(want, 20*time.Second)
	e2e := make([]time.Duration, 0, len(arrived))
	var last time.Time
	for _, s := range done {
		if at, ok := arrived[s.id]; ok {
			e2e = append(e2e, at.Sub(s.start))
			if at.After(last) {
				last = at
			}
		}
	}
	r.e2e, r.lost = summarize(e2e), len(done)-len(arrived)
	if len(arrived) > 0 {
		r.relayed = float64(len(arrived)) / last.Sub(t0).Seconds()
	}
	return r
}
