package app

import (
	"bytes"
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/alertd/alertd/internal/mqtttest"
)

var spamScore = regexp.MustCompile(`X-Spam-Status: \w+, score=(-?[0-9.]+)`)

// The inbox-quality bar: an alert mail (text and HTML parts, a device's
// UTF-8 in the subject) as SpamAssassin's local rules score it, with no
// network tests, must not look like spam: score ≤ 0.
func TestAlertMailPassesSpamAssassin(t *testing.T) {
	sa := need(t, "spamassassin", "spamassassin")
	dir := t.TempDir()
	app := startApp(t, dir, spoolConfig("", greenhouse))
	mqtttest.NewPublisher(t, app.BrokerURL()).Publish(t, "sensors/greenhouse/telemetry", `{"temp": 31.5}`)
	m := waitSpooled(t, dir+"/spool", 1)[0]
	cmd := exec.Command(sa, "-L", "-t")
	cmd.Stdin = bytes.NewReader(m.Raw)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("spamassassin: %v", err)
	}
	s := spamScore.FindSubmatch(out)
	if s == nil {
		t.Fatalf("no X-Spam-Status in:\n%s", out)
	}
	t.Logf("SpamAssassin: %s", s[0])
	if score, _ := strconv.ParseFloat(string(s[1]), 64); score > 0 {
		t.Errorf("SpamAssassin scores the alert %v:\n%s", score, out[bytes.Index(out, []byte("Content analysis details")):])
	}
}
