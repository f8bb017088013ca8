package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/alertd/alertd/internal/cluster"
	"github.com/alertd/alertd/internal/cluster/natstest"
	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/smtptest"
)

// clusterSetup is one alertd instance of a cluster: its config on the
// shared JetStream cluster, its own admin port and local directory.
func clusterSetup(t *testing.T, natsURLs string, smtpPort int, instance string) *setup {
	t.Helper()
	return clusterSetupWith(t, natsURLs, smtpPort, instance, "", "")
}

// clusterSetupWith is clusterSetup with more store keys (indented under
// store:) and more rules.
func clusterSetupWith(t *testing.T, natsURLs string, smtpPort int, instance, storeKeys, rules string) *setup {
	t.Helper()
	dir := t.TempDir()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	var urls []string
	for _, u := range strings.Split(natsURLs, ",") {
		urls = append(urls, strconv.Quote(u))
	}
	yaml := fmt.Sprintf(`http: {listen: %q}
log: {level: debug}
store:
  path: %q
  backend: nats
  nats: {urls: [%s], instance: %s, replicas: %d}
%ssmtp:
  host: 127.0.0.1
  port: %d
  security: none
  from: "alertd <alertd@example.org>"
  timeout: 2s
  retry: {initial: 100ms, max: 300ms, give_up_after: 1h}
defaults: {to: [ops@example.org], cooldown: 0s, rate_limit: 10000/h}
rules:
  - {name: hot, topic: "s/+/t", field: temp, above: 30, subject: "hot {{.Device}}"}
%s`, addr, filepath.Join(dir, "alertd.db"), strings.Join(urls, ", "), instance, min(3, len(urls)), storeKeys, smtpPort, rules)
	path := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return &setup{t: t, dir: dir, config: path, httpAddr: addr}
}

// threeInstances starts alertd a, b and v on c (with storeKeys and rules
// as clusterSetupWith), mailing to srv, and waits until they share the 16
// partitions, five or six each.
func threeInstances(t *testing.T, c *natstest.Cluster, srv *smtptest.Server, storeKeys, rules string) (a, b, v *proc) {
	t.Helper()
	var ps []*proc
	for _, name := range []string{"a", "b", "v"} {
		ps = append(ps, clusterSetupWith(t, c.URL(), srv.Port, name, storeKeys, rules).start())
	}
	a, b, v = ps[0], ps[1], ps[2]
	waitFor(t, 30*time.Second, "16 partitions shared by three instances", func() bool {
		na, nb, nv := a.owned(t), b.owned(t), v.owned(t)
		return na+nb+nv == 16 && na >= 5 && nb >= 5 && nv >= 5
	})
	return a, b, v
}

// owned is how many partitions p says it owns.
func (p *proc) owned(t *testing.T) int {
	return int(p.metrics(t)["alertd_cluster_partitions_owned"])
}

// fleet publishes one reading per device at QoS 1 to nats-server's MQTT
// listener, as devices would, each acknowledged once JetStream holds it.
func fleet(t *testing.T, url string, devices []int, temp float64) {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("fleet-%d", time.Now().UnixNano())).
		SetConnectTimeout(5 * time.Second).SetAutoReconnect(true).SetConnectRetry(true).SetWriteTimeout(5 * time.Second)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to %s: %v", url, tok.Error())
	}
	defer c.Disconnect(100)
	toks := make([]mqtt.Token, 0, len(devices))
	for _, d := range devices {
		toks = append(toks, c.Publish(fmt.Sprintf("s/dev%04d/t", d), 1, false, fmt.Sprintf(`{"temp": %g}`, temp)))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
}

// publishOnce publishes one reading at QoS 1, acknowledged once stored.
func publishOnce(t *testing.T, url, topic, payload string) {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("once-%d", time.Now().UnixNano())).SetConnectTimeout(5 * time.Second)
	cl := mqtt.NewClient(opts)
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to %s: %v", url, tok.Error())
	}
	defer cl.Disconnect(100)
	if tok := cl.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
}

func span(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// atMostTwice fails the test for a subject delivered more than twice: a
// copy under the same Message-ID is what at-least-once allows after a
// crash, a stream of them is a bug.
func atMostTwice(t *testing.T, msgs []smtptest.Message) {
	t.Helper()
	n := map[string]int{}
	for _, m := range msgs {
		n[m.Subject]++
	}
	for s, k := range n {
		if k > 2 {
			t.Errorf("%q delivered %d times", s, k)
		}
	}
}

// waitSubjects waits until a mail of each subject has arrived, or fails
// naming those that have not.
func waitSubjects(t *testing.T, srv *smtptest.Server, subjects []string, timeout time.Duration) {
	t.Helper()
	var missing []string
	deadline := time.Now().Add(timeout)
	for {
		got := mails(srv.Messages())
		missing = missing[:0]
		for _, s := range subjects {
			if len(got[s]) == 0 {
				missing = append(missing, s)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d mails missing after %v: %s", len(missing), len(subjects), timeout, strings.Join(missing[:min(len(missing), 20)], ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// edit replaces the first old in s's configuration file with new.
func (s *setup) edit(t *testing.T, old, new string) {
	t.Helper()
	text, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), old) {
		t.Fatalf("%s has no %q", s.config, old)
	}
	if err := os.WriteFile(s.config, []byte(strings.Replace(string(text), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// hotOnce fails the test unless each device's "hot" alert was mailed
// once (one Message-ID) and srv received no other mail.
func hotOnce(t *testing.T, srv *smtptest.Server, devices int) {
	t.Helper()
	got := mails(srv.Messages())
	for d := range devices {
		if s := fmt.Sprintf("hot dev%04d", d); len(got[s]) != 1 {
			t.Errorf("%q mailed under %d Message-IDs, want 1", s, len(got[s]))
		}
	}
	if n := len(srv.Messages()); n != devices {
		t.Errorf("%d mails, want %d", n, devices)
	}
}

// mails sorts delivered mails by subject: each subject's Message-IDs.
func mails(msgs []smtptest.Message) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, m := range msgs {
		if out[m.Subject] == nil {
			out[m.Subject] = map[string]bool{}
		}
		out[m.Subject][m.Header.Get("Message-Id")] = true
	}
	return out
}

// Three alertd instances share a three-node JetStream cluster; readings of
// 1,000 devices arrive at QoS 1 through nats-server's MQTT listener. One
// instance is killed with SIGKILL while the fleet changes: its partitions
// move to the two others, rebuilt from their state in JetStream, and every
// alert is mailed — each firing and each recovery once, or again with the
// same Message-ID (a mail the dead instance sent but had not yet marked).
func TestClusterSurvivesKill9OfAnInstance(t *testing.T) {
	c := natstest.Start(t, 3)
	srv := smtptest.Start(t, smtptest.Options{})
	a, b, v := threeInstances(t, c, srv, "", "")

	const devices = 1000
	fleet(t, c.MQTTURL(0), span(0, devices/2), 31)
	srv.WaitMessages(t, devices/2, 60*time.Second)

	// The second half breaches and the first half recovers, while one
	// instance dies.
	done := make(chan struct{})
	go func() {
		defer close(done)
		fleet(t, c.MQTTURL(1), span(devices/2, devices), 31)
		fleet(t, c.MQTTURL(1), span(0, devices/2), 20)
	}()
	time.Sleep(200 * time.Millisecond)
	killed := time.Now()
	if err := v.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done
	waitFor(t, 30*time.Second, "the survivors own every partition", func() bool { return a.owned(t)+b.owned(t) == 16 })
	t.Logf("takeover: the survivors owned all 16 partitions %v after the kill", time.Since(killed).Round(10*time.Millisecond))

	want := map[string]bool{}
	for d := range devices {
		want[fmt.Sprintf("hot dev%04d", d)] = true
	}
	for d := range devices / 2 {
		want[fmt.Sprintf("Re: hot dev%04d", d)] = true
	}
	var got map[string]map[string]bool
	waitFor(t, 90*time.Second, fmt.Sprintf("%d distinct alert mails", len(want)), func() bool {
		got = mails(srv.Messages())
		n := 0
		for s := range want {
			if len(got[s]) > 0 {
				n++
			}
		}
		return n == len(want)
	})
	time.Sleep(time.Second) // a second copy would arrive here
	atMostTwice(t, srv.Messages())
	got = mails(srv.Messages())
	for s, ids := range got {
		if !want[s] {
			t.Errorf("unexpected mail %q", s)
		}
		if len(ids) > 1 {
			t.Errorf("%q mailed %d times with different Message-IDs", s, len(ids))
		}
	}
	t.Logf("%d mails delivered for %d alerts (copies share their Message-ID)", len(srv.Messages()), len(want))
}

// An instance paused past its leases (SIGSTOP: a long GC pause, a VM
// frozen) loses its partitions to the others. It was holding alerts
// pending (for: 4s); the new owners find them pending in the partitions'
// states and fire them when for: ends, with no further reading. Resumed,
// the stale owner's for: timers are overdue and it writes at once —
// before its lease renewal can tell it the partitions are gone — and the
// partitions' states refuse those writes (the fence carries the new
// owners' terms): it logs so, steps back and takes its share again. No
// alert is mailed twice under two Message-IDs, and the recoveries,
// judged from the new owners' state, are mailed once each.
func TestClusterStaleOwnerStepsBack(t *testing.T) {
	c := natstest.Start(t, 3)
	srv := smtptest.Start(t, smtptest.Options{})
	a, b, v := threeInstances(t, c, srv, "",
		`  - {name: slow, topic: "s/+/t", field: temp, above: 30, for: 4s, subject: "slow {{.Device}}"}`+"\n")
	const devices = 300
	fleet(t, c.MQTTURL(0), span(0, devices), 31)
	waitFor(t, 3*time.Second, "v holding alerts pending", func() bool { return len(v.statusOf(t).Pending) > 0 })
	if err := v.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	waitFor(t, 30*time.Second, "the others own every partition", func() bool { return a.owned(t)+b.owned(t) == 16 })
	t.Logf("v's partitions taken %v after the pause", time.Since(stopped).Round(100*time.Millisecond))
	var firing []string
	for d := range devices {
		firing = append(firing, fmt.Sprintf("hot dev%04d", d), fmt.Sprintf("slow dev%04d", d))
	}
	waitSubjects(t, srv, firing, 60*time.Second)
	if err := v.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "v's writes refused by the fence", func() bool {
		return strings.Contains(v.out.String(), "state write refused: a later owner holds this partition; stepping back")
	})
	waitFor(t, 30*time.Second, "v rejoins", func() bool { return v.owned(t) >= 5 })
	fleet(t, c.MQTTURL(2), span(0, devices), 20) // every device recovers
	var all []string
	for _, s := range firing {
		all = append(all, s, "Re: "+s)
	}
	waitSubjects(t, srv, all, 60*time.Second)
	time.Sleep(time.Second) // a second copy would arrive here
	atMostTwice(t, srv.Messages())
	got := mails(srv.Messages())
	for _, s := range all {
		if len(got[s]) != 1 {
			t.Errorf("%q mailed under %d Message-IDs, want 1", s, len(got[s]))
		}
	}
}

// One of the three NATS nodes dies (the stream, the lease bucket and each
// partition's state are replicated three times): the instances carry on
// with the two left, and every alert is mailed once.
func TestClusterSurvivesTheLossOfANATSNode(t *testing.T) {
	c := natstest.Start(t, 3)
	srv := smtptest.Start(t, smtptest.Options{})
	threeInstances(t, c, srv, "", "")
	const devices = 400
	fleet(t, c.MQTTURL(0), span(0, devices/2), 31)
	srv.WaitMessages(t, devices/2, 60*time.Second)
	c.Kill(2)
	killed := time.Now()
	fleet(t, c.MQTTURL(0), span(devices/2, devices), 31)
	fleet(t, c.MQTTURL(1), span(0, devices/2), 20)
	want := devices + devices/2 // every device fired; the first half recovered
	srv.WaitMessages(t, want, 90*time.Second)
	t.Logf("every alert mailed %v after the node's loss", time.Since(killed).Round(10*time.Millisecond))
	time.Sleep(time.Second) // a second copy would arrive here
	atMostTwice(t, srv.Messages())
	for s, ids := range mails(srv.Messages()) {
		if len(ids) > 1 {
			t.Errorf("%q mailed under %d Message-IDs", s, len(ids))
		}
	}
	if n := len(mails(srv.Messages())); n != want {
		t.Errorf("%d distinct mails, want %d", n, want)
	}
}

// NATS out of reach at start: alertd waits for it, /healthz says why
// (503, "nats: not connected to NATS"), and once NATS is up the instance
// takes the partitions and is healthy.
func TestClusterWaitsForNATSAtStart(t *testing.T) {
	c := natstest.Start(t, 1)
	url := c.URL()
	c.Kill(0)
	srv := smtptest.Start(t, smtptest.Options{})
	s := clusterSetup(t, url, srv.Port, "a")
	p := s.launch()
	waitFor(t, 10*time.Second, "/healthz saying NATS is out of reach", func() bool {
		resp, err := http.Get(p.http + "/healthz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "nats: not connected to NATS")
	})
	c.Restart(0)
	p.waitHealthy(t)
	waitFor(t, 30*time.Second, "the partitions owned", func() bool { return p.owned(t) == 16 })
}

// Timers move with their partition: devices seen once go silent, and the
// instance that owned some of them is killed before their silent_for
// ran out. The new owners rebuild those series from the partition state
// (last-seen times checkpointed every second) and report every device
// silent, each once.
func TestClusterSilenceTimersSurviveTheirOwner(t *testing.T) {
	c := natstest.Start(t, 3)
	srv := smtptest.Start(t, smtptest.Options{})
	_, _, v := threeInstances(t, c, srv, "  checkpoint_interval: 1s\n",
		`  - {name: quiet, topic: "s/+/t", silent_for: 6s, subject: "quiet {{.Device}}"}`+"\n")
	const devices = 60
	fleet(t, c.MQTTURL(0), span(0, devices), 20) // alive, nothing breached
	seen := time.Now()
	time.Sleep(2500 * time.Millisecond) // two checkpoints
	if err := v.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	msgs := srv.WaitMessages(t, devices, 60*time.Second)
	t.Logf("%d silence mails, the last %v after the devices were last seen", len(msgs), time.Since(seen).Round(100*time.Millisecond))
	time.Sleep(time.Second) // a second copy would arrive here
	atMostTwice(t, srv.Messages())
	got := mails(srv.Messages())
	for d := range devices {
		s := fmt.Sprintf("quiet dev%04d", d)
		if len(got[s]) != 1 {
			t.Errorf("%q mailed under %d Message-IDs, want 1", s, len(got[s]))
		}
	}
	if len(got) != devices {
		t.Errorf("%d distinct mails, want %d", len(got), devices)
	}
}

// A clean stop (SIGTERM) saves what the partitions hold before the
// leases go: last-seen times never checkpointed (checkpoint_interval 1h)
// reach the next instance, which reports the devices silent in time.
func TestClusterStopSavesLastSeenTimesForTheNextOwner(t *testing.T) {
	c := natstest.Start(t, 1)
	srv := smtptest.Start(t, smtptest.Options{})
	setup := func(name string) *setup {
		return clusterSetupWith(t, c.URL(), srv.Port, name, "  checkpoint_interval: 1h\n",
			`  - {name: quiet, topic: "s/+/t", silent_for: 5s, subject: "quiet {{.Device}}"}`+"\n")
	}
	a := setup("a").start()
	waitFor(t, 30*time.Second, "a owns the partitions", func() bool { return a.owned(t) == 16 })
	const devices = 30
	fleet(t, c.MQTTURL(0), span(0, devices), 20)
	time.Sleep(500 * time.Millisecond) // handled
	if took, code := a.term(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d after %v", code, took)
	}
	b := setup("b").start()
	waitFor(t, 30*time.Second, "b owns the partitions", func() bool { return b.owned(t) == 16 })
	srv.WaitMessages(t, devices, 30*time.Second)
	time.Sleep(time.Second)
	atMostTwice(t, srv.Messages())
	if got := mails(srv.Messages()); len(got) != devices {
		t.Errorf("%d devices reported silent, want %d", len(got), devices)
	}
}

// alertd runs one of the binary's verbs and returns what it printed;
// a failure ends the test.
func alertd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("alertd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// statusOf reads an instance's /api/v1/status.
func (p *proc) statusOf(t *testing.T) httpapi.Status {
	t.Helper()
	resp, err := http.Get(p.http + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st httpapi.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// A silence is the cluster's, not one partition's: added with `alertd
// silence add` on one instance's file, it holds back the alerts of every
// instance's partitions (each status page says so); listed through
// another's file; removed through the third's, every held alert is
// mailed at once, each once.
func TestClusterSilenceHoldsBackEveryInstance(t *testing.T) {
	c := natstest.Start(t, 3)
	srv := smtptest.Start(t, smtptest.Options{})
	a, b, v := threeInstances(t, c, srv, "", "")
	out := alertd(t, "silence", "add", "-config", a.config, "-rule", "hot", "-series", "s/+/t", "-for", "1h", "-comment", "greenhouse works")
	if !strings.HasPrefix(out, "silence 1: rule hot on s/+/t until ") || !strings.Contains(out, "NATS at nats://127.0.0.1:") {
		t.Fatalf("silence add printed %q", out)
	}
	const devices = 150
	fleet(t, c.MQTTURL(1), span(0, devices), 31)
	waitFor(t, 30*time.Second, "every alert firing, held by the silence, on the three status pages", func() bool {
		held := 0
		for _, p := range []*proc{a, b, v} {
			st := p.statusOf(t)
			if st.Cluster == nil || st.Cluster.Owned() < 5 || len(st.Silences) != 1 {
				return false
			}
			for _, al := range st.Firing {
				if al.Held == "silenced" {
					held++
				}
			}
		}
		return held == devices
	})
	time.Sleep(time.Second) // a mail let through would arrive here
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("%d mails sent under the silence", n)
	}
	if out := alertd(t, "silence", "list", "-config", b.config); !strings.Contains(out, "greenhouse works") {
		t.Fatalf("silence list through b:\n%s", out)
	}
	alertd(t, "silence", "remove", "-config", v.config, "1")
	srv.WaitMessages(t, devices, 30*time.Second)
	time.Sleep(time.Second) // a second copy would arrive here
	hotOnce(t, srv, devices)
}

// The outbox gauges count the mail of every owned partition: with the
// server down, alertd_mail_queue_depth says how many wait (and the oldest
// how long); once the server is back they go out and the gauge is 0.
func TestClusterQueueGaugesCountEveryPartition(t *testing.T) {
	c := natstest.Start(t, 1)
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDown(true)
	p := clusterSetup(t, c.URL(), srv.Port, "a").start()
	waitFor(t, 30*time.Second, "the partitions owned", func() bool { return p.owned(t) == 16 })
	const devices = 40
	fleet(t, c.MQTTURL(0), span(0, devices), 31)
	waitFor(t, 20*time.Second, "40 mails counted waiting, and the SMTP preflight failed", func() bool {
		m := p.metrics(t)
		_, probed := m["alertd_smtp_preflight_ok"]
		return m["alertd_mail_queue_depth"] == devices && m["alertd_mail_oldest_pending_seconds"] > 0 && probed && m["alertd_smtp_preflight_ok"] == 0
	})
	if st := p.statusOf(t); st.Outbox.Pending != devices {
		t.Errorf("status page: %d mails waiting, want %d", st.Outbox.Pending, devices)
	}
	// A second instance takes half the partitions, and their mail: each
	// counts only what it owns.
	q := clusterSetup(t, c.URL(), srv.Port, "b").start()
	waitFor(t, 30*time.Second, "the partitions shared and the mail counted by its owners", func() bool {
		na, nb := p.metrics(t)["alertd_mail_queue_depth"], q.metrics(t)["alertd_mail_queue_depth"]
		return p.owned(t) == 8 && q.owned(t) == 8 && na+nb == devices && na > 0 && nb > 0
	})
	srv.SetDown(false)
	srv.WaitMessages(t, devices, 30*time.Second)
	waitFor(t, 10*time.Second, "the gauges back to 0", func() bool {
		return p.metrics(t)["alertd_mail_queue_depth"] == 0 && q.metrics(t)["alertd_mail_queue_depth"] == 0
	})
}

// A silence removed while no instance ran (alertd silence remove talks to
// NATS) releases the alerts it held as soon as their partitions are taken
// again: they were held until the silence's end.
func TestClusterSilenceRemovedWhileStoppedReleasesItsAlerts(t *testing.T) {
	c := natstest.Start(t, 1)
	srv := smtptest.Start(t, smtptest.Options{})
	s := clusterSetup(t, c.URL(), srv.Port, "a")
	p := s.start()
	waitFor(t, 30*time.Second, "the partitions owned", func() bool { return p.owned(t) == 16 })
	alertd(t, "silence", "add", "-config", s.config, "-rule", "hot", "-for", "1h")
	const devices = 20
	fleet(t, c.MQTTURL(0), span(0, devices), 31)
	waitFor(t, 20*time.Second, "every alert held by the silence", func() bool {
		held := 0
		for _, al := range p.statusOf(t).Firing {
			if al.Held == "silenced" {
				held++
			}
		}
		return held == devices
	})
	if _, code := p.term(t); code != 0 {
		t.Fatalf("alertd exited %d", code)
	}
	alertd(t, "silence", "remove", "-config", s.config, "1")
	s.start()
	srv.WaitMessages(t, devices, 30*time.Second)
	if n := len(mails(srv.Messages())); n != devices {
		t.Errorf("%d distinct mails, want %d", n, devices)
	}
}

// A reading that fires hundreds of rules at once writes more than one
// commit to a partition's state carries: its transitions are committed
// in chunks, and every alert is mailed once (before, the reading was
// refused on every delivery and no alert went out).
func TestClusterReadingThatFiresHundredsOfRules(t *testing.T) {
	c := natstest.Start(t, 1)
	srv := smtptest.Start(t, smtptest.Options{})
	const n = 300
	var rules strings.Builder
	for i := range n {
		fmt.Fprintf(&rules, "  - {name: r%03d, topic: \"many/+/t\", field: temp, above: 30, rate_limit: 1000/h}\n", i)
	}
	p := clusterSetupWith(t, c.URL(), srv.Port, "a", "", rules.String()).start()
	waitFor(t, 30*time.Second, "the partitions owned", func() bool { return p.owned(t) == 16 })
	publishOnce(t, c.MQTTURL(0), "many/dev/t", `{"temp": 31}`)
	srv.WaitMessages(t, n, 30*time.Second)
	time.Sleep(time.Second) // a second copy would arrive here
	if got := len(mails(srv.Messages())); got != n || len(srv.Messages()) != n {
		t.Errorf("%d mails, %d distinct subjects; want %d of each", len(srv.Messages()), got, n)
	}
}

// An instance owning many partitions holds no more connections to the
// SMTP server than smtp.max_connections: its partitions' mailers share
// them (providers limit concurrent connections). Every alert is mailed.
func TestClusterInstanceKeepsToMaxConnections(t *testing.T) {
	c := natstest.Start(t, 1)
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDataDelay(20 * time.Millisecond) // the mails of many partitions overlap
	s := clusterSetup(t, c.URL(), srv.Port, "a")
	s.edit(t, "  timeout: 2s\n", "  timeout: 2s\n  max_connections: 2\n")
	p := s.start()
	waitFor(t, 30*time.Second, "the partitions owned and the SMTP preflight passed", func() bool {
		return p.owned(t) == 16 && p.metrics(t)["alertd_smtp_preflight_ok"] == 1
	})
	const devices = 120
	fleet(t, c.MQTTURL(0), span(0, devices), 31)
	srv.WaitMessages(t, devices, 60*time.Second)
	if n := srv.MaxOpen(); n > 2 || n < 1 {
		t.Errorf("%d connections open at once, want at most smtp.max_connections (2)", n)
	}
	if got := len(mails(srv.Messages())); got != devices {
		t.Errorf("%d distinct mails, want %d", got, devices)
	}
}

// A reload in cluster mode (SIGHUP to one instance, `alertd reload` to
// the other) applies the new rules in every partition each owns: a firing
// alert of an unchanged rule stays firing (no second mail), a removed
// rule's alert is forgotten without a mail, and an added rule on a topic
// the old rules did not watch alerts at once: the ingest stream now
// captures it.
func TestClusterReloadAppliesTheRulesInEveryPartition(t *testing.T) {
	c := natstest.Start(t, 1)
	srv := smtptest.Start(t, smtptest.Options{})
	setupOf := func(name string) *setup {
		return clusterSetupWith(t, c.URL(), srv.Port, name, "",
			`  - {name: gone, topic: "s/+/t", field: temp, above: 40, subject: "gone {{.Device}}"}`+"\n")
	}
	sa, sb := setupOf("a"), setupOf("b")
	a, b := sa.start(), sb.start()
	waitFor(t, 30*time.Second, "16 partitions shared", func() bool { return a.owned(t)+b.owned(t) == 16 && a.owned(t) >= 7 })
	const devices = 40
	fleet(t, c.MQTTURL(0), span(0, devices), 45) // hot and gone fire
	srv.WaitMessages(t, 2*devices, 30*time.Second)

	for _, s := range []*setup{sa, sb} {
		s.edit(t, `  - {name: gone, topic: "s/+/t", field: temp, above: 40, subject: "gone {{.Device}}"}`,
			`  - {name: wet, topic: "w/+/h", field: hum, above: 90, subject: "wet {{.Device}}"}`)
	}
	a.hup(t, "success")
	if out, code := sb.reloadCommand(t); code != 0 || !strings.Contains(out, "reloaded: ") || !strings.Contains(out, "wet") {
		t.Fatalf("alertd reload on b: exit %d\n%s", code, out)
	}
	fleet(t, c.MQTTURL(0), span(0, devices), 46) // hot: still firing; gone: no longer a rule
	publishOnce(t, c.MQTTURL(0), "w/cellar/h", `{"hum": 95}`)
	srv.WaitMessages(t, 2*devices+1, 30*time.Second)
	fleet(t, c.MQTTURL(0), span(0, devices), 20) // hot resolves; gone was forgotten: no resolve
	srv.WaitMessages(t, 3*devices+1, 30*time.Second)
	time.Sleep(time.Second) // a mail too many would arrive here
	got := mails(srv.Messages())
	if len(got["wet cellar"]) != 1 {
		t.Errorf("the added rule's alert mailed %d times, want 1", len(got["wet cellar"]))
	}
	for d := range devices {
		for s, want := range map[string]int{fmt.Sprintf("hot dev%04d", d): 1, fmt.Sprintf("Re: hot dev%04d", d): 1,
			fmt.Sprintf("gone dev%04d", d): 1, fmt.Sprintf("Re: gone dev%04d", d): 0} {
			if len(got[s]) != want {
				t.Errorf("%q mailed %d times, want %d", s, len(got[s]), want)
			}
		}
	}
	if n := len(srv.Messages()); n != 3*devices+1 {
		t.Errorf("%d mails, want %d", n, 3*devices+1)
	}
}

// startBridge runs a Mosquitto that devices publish to and that bridges
// their topics under s/ to nats-server's MQTT listener at natsMQTT (a
// tcp:// URL) at QoS 1, as an operator keeps the broker the fleet already
// uses. It returns the Mosquitto's URL.
func startBridge(t *testing.T, natsMQTT string) string {
	t.Helper()
	bin, err := mqtttest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
connection alertd
address %s
topic s/# out 1
try_private false
bridge_protocol_version mqttv311
cleansession false
clientid alertd-bridge
log_dest file %s
`, port, strings.TrimPrefix(natsMQTT, "tcp://"), filepath.Join(dir, "mosquitto.log"))
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitFor(t, 10*time.Second, "the bridging Mosquitto listening", func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return "tcp://" + addr
}

// Devices that keep publishing to the Mosquitto they know reach the
// cluster through a Mosquitto bridge to nats-server's MQTT listener
// (README, "Running more than one alertd"): every alert is mailed once.
func TestClusterThroughAMosquittoBridge(t *testing.T) {
	c := natstest.Start(t, 1)
	srv := smtptest.Start(t, smtptest.Options{})
	p := clusterSetup(t, c.URL(), srv.Port, "a").start()
	waitFor(t, 30*time.Second, "the partitions owned", func() bool { return p.owned(t) == 16 })
	mosq := startBridge(t, c.MQTTURL(0))
	const devices = 50
	waitFor(t, 20*time.Second, "the bridge carrying readings", func() bool {
		fleet(t, mosq, []int{0}, 31)
		return len(srv.Messages()) > 0
	})
	fleet(t, mosq, span(0, devices), 31)
	srv.WaitMessages(t, devices, 30*time.Second)
	time.Sleep(time.Second) // a second copy would arrive here
	hotOnce(t, srv, devices)
}

// The outbox commands reach, through an instance's HTTP API, the outboxes
// of the partitions it owns: a mail the server refused for good is listed
// as dead, with the server's words and an ID unique across partitions,
// and `alertd outbox retry` with that ID sends it once the server takes it.
func TestClusterOutboxCommandsRetryADeadLetter(t *testing.T) {
	c := natstest.Start(t, 1)
	srv := smtptest.Start(t, smtptest.Options{})
	srv.FailRcpt("ops@example.org", 1, 550, [3]int{5, 1, 1}, "no such user here")
	p := clusterSetup(t, c.URL(), srv.Port, "a").start()
	waitFor(t, 30*time.Second, "the partitions owned", func() bool { return p.owned(t) == 16 })
	fleet(t, c.MQTTURL(0), []int{7}, 31)
	var id string
	waitFor(t, 20*time.Second, "the refused mail listed as dead", func() bool {
		out := alertd(t, "outbox", "list", "-config", p.config)
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "hot dev0007") && strings.Contains(line, "no such user here") {
				id = strings.Fields(line)[0]
				return true
			}
		}
		return false
	})
	part := cluster.PartitionOf("s.dev0007.t", 16) // the topic as nats-server's subject
	if want := strconv.Itoa(part*1_000_000_000_000 + 1); id != want {
		t.Errorf("dead letter listed as %q, want %s (partition × 10^12 + its number)", id, want)
	}
	alertd(t, "outbox", "retry", "-config", p.config, id)
	msgs := srv.WaitMessages(t, 1, 20*time.Second)
	if msgs[0].Subject != "hot dev0007" {
		t.Errorf("retried mail %q", msgs[0].Subject)
	}
	if out := alertd(t, "outbox", "list", "-config", p.config); strings.Contains(out, "hot dev0007") {
		t.Errorf("the delivered mail is still listed:\n%s", out)
	}
}

// An instance cut off from NATS says so itself: its self alerts run in a
// pipeline of its own (a partition moves; an instance away from NATS owns
// none), mail "nats unreachable" through its SMTP sessions, and the
// resolution once NATS is back.
func TestClusterInstanceMailsWhenNATSIsOutOfReach(t *testing.T) {
	c := natstest.Start(t, 1)
	srv := smtptest.Start(t, smtptest.Options{})
	s := clusterSetup(t, c.URL(), srv.Port, "a")
	s.edit(t, "defaults:", "self_alerts: {source_down_after: 2s}\ndefaults:")
	p := s.start()
	waitFor(t, 30*time.Second, "the partitions owned", func() bool { return p.owned(t) == 16 })
	c.Kill(0)
	waitFor(t, 30*time.Second, "the instance's mail about NATS", func() bool {
		for _, m := range srv.Messages() {
			if strings.Contains(m.Subject, "nats unreachable for 2s") && !strings.HasPrefix(m.Subject, "Re: ") {
				return true
			}
		}
		return false
	})
	c.Restart(0)
	waitFor(t, 60*time.Second, "its resolution once NATS is back", func() bool {
		for _, m := range srv.Messages() {
			if strings.HasPrefix(m.Subject, "Re: ") && strings.Contains(m.Subject, "nats unreachable") && strings.Contains(m.Body, "reaches nats again") {
				return true
			}
		}
		return false
	})
}
