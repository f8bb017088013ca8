package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/smtptest"
)

// A device's mail that heard 250 survives a kill -9: the upstream server
// was down, alertd is killed, and after the restart the mail is relayed,
// once. The 250 came only after the commit.
func TestDeviceMailSurvivesKill9After250(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDown(true)
	smtpIn := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	s := newSetup(t, mailConfig(broker.URL(), srv.Port, fmt.Sprintf(`ingress:
  relay_to: [ops@example.org]
  smtp: {listen: %q, hostname: alertd.test}
`, smtpIn)))
	p := s.start()
	host, port, _ := net.SplitHostPort(smtpIn)
	out, err := exec.Command("swaks", "--server", host, "--port", port, "--from", "cellar@casa.lan",
		"--to", "ops@example.org", "--header", "Subject: Cellar flooded", "--body", "Water!", "--timeout", "10").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	p.kill()

	srv.SetDown(false)
	s.start()
	msgs := srv.WaitMessages(t, 1, 15*time.Second)
	time.Sleep(500 * time.Millisecond) // a second copy would arrive here
	if msgs = srv.Messages(); len(msgs) != 1 || msgs[0].Subject != "Cellar flooded" {
		t.Fatalf("%d mails after the restart, want the device's mail once", len(msgs))
	}
}
