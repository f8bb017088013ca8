package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/smtptest"
)

// rewrite replaces the setup's configuration file with yaml (after the
// http and store lines newSetup wrote), as an operator editing it would.
func (s *setup) rewrite(yaml string) {
	s.t.Helper()
	old, err := os.ReadFile(s.config)
	if err != nil {
		s.t.Fatal(err)
	}
	head := strings.SplitAfterN(string(old), "\n", 4)[:3] // http, store, log
	if err := os.WriteFile(s.config, []byte(strings.Join(head, "")+yaml), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// hup sends SIGHUP and waits until alertd counted a reload with result.
func (p *proc) hup(t *testing.T, result string) {
	t.Helper()
	key := fmt.Sprintf(`alertd_config_reload_total{result=%q}`, result)
	before := p.metrics(t)[key]
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "reload counted as "+result, func() bool { return p.metrics(t)[key] > before })
}

// alertd reload through the binary: its output and exit code.
func (s *setup) reloadCommand(t *testing.T) (string, int) {
	t.Helper()
	out, err := exec.Command(binary, "reload", "-config", s.config).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// (a) A firing alert survives a reload of its unchanged rule: no second
// firing mail, no resolved mail, and the episode's thread continues.
func TestReloadKeepsAFiringAlert(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	cfg := mailConfig(broker.URL(), srv.Port, "")
	s := newSetup(t, cfg)
	p := s.start()
	pub := mqtttest.NewPublisher(t, broker.URL())
	pub.Publish(t, "s/a/t", `{"temp": 31}`)
	first := srv.WaitMessages(t, 1, 15*time.Second)[0]

	s.rewrite(cfg + "# edited by the operator: the same rules\n")
	p.hup(t, "success")
	if !p.healthy() {
		t.Fatal("alertd not healthy after the reload")
	}
	pub.Publish(t, "s/a/t", `{"temp": 32}`) // still breaching: nothing new
	pub.Publish(t, "s/a/t", `{"temp": 20}`) // clears: the resolved mail
	msgs := srv.WaitMessages(t, 2, 15*time.Second)
	time.Sleep(500 * time.Millisecond) // a third mail would arrive here
	msgs = srv.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d mails, want the firing mail and one resolved mail", len(msgs))
	}
	if got := msgs[1].Header.Get("X-Alertd-State"); got != "resolved" {
		t.Errorf("second mail is %q, want resolved", got)
	}
	if got, want := msgs[1].Header.Get("In-Reply-To"), first.Header.Get("Message-Id"); got != want {
		t.Errorf("resolved mail replies to %q, want the firing mail %q: the thread was lost", got, want)
	}
}

// (b) A rule added on a new topic filter fires after SIGHUP, without a
// restart: the broker subscription follows the rules.
func TestReloadAddsARuleAndItsSubscription(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	cfg := mailConfig(broker.URL(), srv.Port, "")
	s := newSetup(t, cfg)
	p := s.start()
	pub := mqtttest.NewPublisher(t, broker.URL())
	pub.Publish(t, "garden/pump/state", `{"pressure": 9}`)
	time.Sleep(300 * time.Millisecond)

	s.rewrite(cfg + `  - {name: pump, topic: "garden/+/state", field: pressure, above: 5, subject: "pump {{.Device}}"}` + "\n")
	p.hup(t, "success")
	pub.Publish(t, "garden/pump/state", `{"pressure": 8}`)
	msgs := srv.WaitMessages(t, 1, 15*time.Second)
	if msgs[0].Subject != "pump pump" {
		t.Fatalf("mail %q, want the added rule's", msgs[0].Subject)
	}
	pub.Publish(t, "s/b/t", `{"temp": 31}`) // the old rule still works
	srv.WaitMessages(t, 2, 15*time.Second)
	if m := p.metrics(t); m["alertd_config_last_reload_success_timestamp_seconds"] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("alertd_config_last_reload_success_timestamp_seconds = %v, want the reload's time", m["alertd_config_last_reload_success_timestamp_seconds"])
	}
}

// (c) A broken file is refused with its line and column, the running
// rules stay in force, and (d) alertd reload says so and exits 2.
func TestReloadRefusesABrokenFile(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	cfg := mailConfig(broker.URL(), srv.Port, "")
	s := newSetup(t, cfg)
	p := s.start()

	broken := strings.Replace(cfg, "above: 30", "above: warm", 1)
	s.rewrite(broken)
	p.hup(t, "error")
	if out := p.out.String(); !strings.Contains(out, "alertd.yaml:") || !strings.Contains(out, "above") {
		t.Errorf("the reload error does not name the file, line and key:\n%s", out)
	}
	out, code := s.reloadCommand(t)
	if code != 2 || !strings.Contains(out, "alertd.yaml:") {
		t.Errorf("alertd reload on a broken file: exit %d, output %q; want exit 2 and FILE:LINE:COL", code, out)
	}
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "s/a/t", `{"temp": 31}`)
	if msgs := srv.WaitMessages(t, 1, 15*time.Second); msgs[0].Subject != "hot a" {
		t.Fatalf("mail %q, want the running rule's", msgs[0].Subject)
	}

	s.rewrite(cfg)
	out, code = s.reloadCommand(t)
	if code != 0 || !strings.Contains(out, "reloaded") {
		t.Errorf("alertd reload on a good file: exit %d, output %q; want exit 0 and a word that it reloaded", code, out)
	}
}

// A setting that cannot change while alertd runs is refused by name, and
// nothing of the file is applied.
func TestReloadRefusesALiveChangeOfTheStore(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	cfg := mailConfig(broker.URL(), srv.Port, "")
	s := newSetup(t, cfg)
	p := s.start()
	old, _ := os.ReadFile(s.config)
	moved := strings.Replace(string(old), "alertd.db", "other.db", 1)
	moved = strings.Replace(moved, "above: 30", "above: 40", 1)
	if err := os.WriteFile(s.config, []byte(moved), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := s.reloadCommand(t)
	if code != 2 || !strings.Contains(out, "store.path") {
		t.Errorf("reload with a new store.path: exit %d, output %q; want exit 2 naming store.path", code, out)
	}
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "s/a/t", `{"temp": 31}`) // above the old 30, not the refused 40
	srv.WaitMessages(t, 1, 15*time.Second)
	if !p.healthy() {
		t.Error("alertd not healthy after a refused reload")
	}
}

// (e) Reloads during a storm of QoS 1 readings lose none: every reading is
// acknowledged only after its alert is committed, reload or not.
func TestReloadDuringAStormLosesNothing(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	cfg := mailConfig(broker.URL(), srv.Port, "")
	s := newSetup(t, cfg)
	p := s.start()
	pub := mqtttest.NewPublisher(t, broker.URL())
	const n = 300
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			pub.Publish(t, fmt.Sprintf("s/d%d/t", i), `{"temp": 31}`)
		}
	}()
	for i := range 5 {
		s.rewrite(cfg + fmt.Sprintf("# reload %d\n", i))
		p.hup(t, "success")
	}
	<-done
	srv.WaitMessages(t, n, 60*time.Second)
	time.Sleep(500 * time.Millisecond)
	ids := messageIDs(srv.Messages())
	if len(ids) != n {
		t.Fatalf("%d distinct alerts delivered, want %d", len(ids), n)
	}
}
