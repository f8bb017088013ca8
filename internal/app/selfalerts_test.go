package app

import (
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/selfcheck"
	"github.com/alertd/alertd/internal/smtptest"
)

func selfMails(srv *smtptest.Server, rule, state string) []smtptest.Message {
	var out []smtptest.Message
	for _, m := range srv.Messages() {
		if m.Header != nil && m.Header.Get("X-Alertd-Rule") == rule && m.Header.Get("X-Alertd-State") == state {
			out = append(out, m)
		}
	}
	return out
}

// alertd watches itself, over real peers: the broker away longer than
// source_down_after is one mail, its return one more; a mail the SMTP
// server would not take for longer than mail_delayed_after brings, when
// the server is back, the alert itself and a mail saying how late it was.
func TestSelfAlerts(t *testing.T) {
	broker := mqtttest.Start(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{"alerts@example.org": smtpPassword}})
	extra := "self_alerts: {source_down_after: 1s, mail_delayed_after: 1s}\n"
	app := startApp(t, t.TempDir(), smtpConfig(t, broker.URL(), srv.Port, "starttls", srv.CAFile, extra, greenhouse))

	broker.Outage(3 * time.Second)
	waitFor(t, 15*time.Second, "the source-down mail and its resolution", func() bool {
		return len(selfMails(srv, selfcheck.SourceRule, "firing")) == 1 && len(selfMails(srv, selfcheck.SourceRule, "resolved")) == 1
	})
	down := selfMails(srv, selfcheck.SourceRule, "firing")[0]
	if !strings.Contains(down.Subject, "mqtt unreachable for 1s") || !strings.Contains(down.Body, "has not reached its mqtt source") {
		t.Errorf("source-down mail %q:\n%s", down.Subject, down.Body)
	}
	if back := selfMails(srv, selfcheck.SourceRule, "resolved")[0]; !strings.HasPrefix(back.Subject, "Re: ") || !strings.Contains(back.Body, "reaches mqtt again") {
		t.Errorf("source-back mail %q:\n%s", back.Subject, back.Body)
	}

	srv.SetDown(true)
	srv.Drop() // the session the mailer keeps open between mails goes down too
	waitFor(t, 15*time.Second, "subscribed again", app.Ready)
	mqtttest.NewPublisher(t, broker.URL()).Publish(t, "sensors/salon/telemetry", `{"temp": 31.5}`)
	time.Sleep(2500 * time.Millisecond) // the alert waits past mail_delayed_after
	srv.SetDown(false)
	waitFor(t, 20*time.Second, "the alert, the delay mail and its resolution", func() bool {
		return len(selfMails(srv, "greenhouse-hot", "firing")) == 1 && len(selfMails(srv, selfcheck.MailRule, "firing")) == 1 &&
			len(selfMails(srv, selfcheck.MailRule, "resolved")) == 1
	})
	if late := selfMails(srv, selfcheck.MailRule, "resolved")[0]; !strings.Contains(late.Body, "Alerts were delayed by up to") {
		t.Errorf("delivery-back mail:\n%s", late.Body)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(selfMails(srv, selfcheck.MailRule, "firing")) + len(selfMails(srv, selfcheck.SourceRule, "firing")); n != 2 {
		t.Errorf("%d self-alert firing mails, want 2 (one per trouble)", n)
	}
}
