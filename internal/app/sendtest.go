package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/mailer"
)

// SendTest sends one test mail the way the service would send an alert:
// the same transport, built from the same settings. Over SMTP it writes
// the session to out as it happens (AUTH payloads redacted); without an
// smtp section it writes the mail to the spool. It returns the last line to
// print, which says in plain words what worked or what to change, and
// whether the mail was accepted.
func SendTest(ctx context.Context, cfg *config.Config, to []string, out io.Writer) (string, bool) {
	a := &App{cfg: cfg, log: slog.New(slog.DiscardHandler), from: SpoolFrom}
	if len(to) == 0 {
		to = testRecipients(cfg)
	}
	if len(to) == 0 {
		return "FAILED: no recipient: give -to ADDR (or set defaults.to)", false
	}
	tr, err := a.newTransport()
	if err != nil {
		return "FAILED: " + err.Error(), false
	}
	msg, env, err := mailer.TestMessage(a.from, to, a.mailTarget())
	if err != nil {
		return "FAILED: -to " + err.Error(), false
	}
	if sp, ok := tr.(*mailer.Spool); ok {
		if _, err := sp.Send(ctx, env, msg); err != nil {
			return "FAILED: " + err.Error(), false
		}
		return fmt.Sprintf("OK: no smtp section, so the test mail was written to %s; "+
			"configure smtp to send mail for real", sp.Path(msg)), true
	}
	st := tr.(*mailer.SMTPTransport)
	st.SetTranscript(out)
	res, err := st.Send(ctx, env, msg)
	_ = st.Close() // QUIT, in the transcript too
	return sendVerdict(fmt.Sprintf("%s:%d", cfg.SMTP.Host, cfg.SMTP.Port), res, err)
}

// testRecipients are defaults.to, else the first rule's recipients.
func testRecipients(cfg *config.Config) []string {
	if len(cfg.Defaults.To) > 0 {
		return cfg.Defaults.To
	}
	for _, r := range cfg.Rules {
		if len(r.To) > 0 {
			return r.To
		}
	}
	return nil
}

// sendVerdict is the last line of send-test.
func sendVerdict(server string, res mailer.Outcome, err error) (string, bool) {
	var me *mailer.Error
	switch {
	case errors.As(err, &me):
		return "FAILED: " + me.Explain(server), false
	case err != nil:
		return "FAILED: " + err.Error(), false
	case len(res.Accepted) == 0:
		return "FAILED: " + server + " refused every recipient: " + mailer.Refused(res.Rejected), false
	}
	line := fmt.Sprintf("OK: %s accepted the test mail for %s (250): alerts can go out with these settings",
		server, strings.Join(res.Accepted, ", "))
	if len(res.Rejected) > 0 {
		line += "; but it refused " + mailer.Refused(res.Rejected)
	}
	return line, true
}
