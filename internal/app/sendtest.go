package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"os"
	"strings"
	"time"

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
	msg, env, err := testMail(a.from, to, a.mailTarget())
	if err != nil {
		return "FAILED: " + err.Error(), false
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
	return sendVerdict(cfg.SMTP, res, err)
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

func testMail(from string, to []string, target string) ([]byte, mailer.Envelope, error) {
	env := mailer.Envelope{}
	if a, err := mail.ParseAddress(from); err == nil {
		env.From = a.Address
	}
	for _, t := range to {
		a, err := mail.ParseAddress(t)
		if err != nil {
			return nil, env, fmt.Errorf("-to %q is not an address: %v", t, err)
		}
		env.To = append(env.To, a.Address)
	}
	host, _ := os.Hostname()
	now := time.Now()
	msg, err := mailer.Compose(mailer.Mail{
		From: from, To: to, Subject: "alertd test mail", Date: now, MessageID: mailer.NewMessageID(now, from),
		Body: fmt.Sprintf("This is a test mail from alertd send-test on %s, sent at %s through %s.\n\n"+
			"If you can read it, alerts will reach you the same way.\n", host, now.Format(time.RFC1123Z), target),
		Headers: map[string]string{"X-Alertd-Test": "send-test"},
	})
	return msg, env, err
}

// sendVerdict is the last line of send-test.
func sendVerdict(s *config.SMTP, res mailer.Outcome, err error) (string, bool) {
	server := fmt.Sprintf("%s:%d", s.Host, s.Port)
	var me *mailer.Error
	switch {
	case errors.As(err, &me):
		return "FAILED: " + explainFailure(server, me), false
	case err != nil:
		return "FAILED: " + err.Error(), false
	case len(res.Accepted) == 0:
		return "FAILED: " + server + " refused every recipient: " + rejections(res.Rejected), false
	}
	line := fmt.Sprintf("OK: %s accepted the test mail for %s (250): alerts can go out with these settings",
		server, strings.Join(res.Accepted, ", "))
	if len(res.Rejected) > 0 {
		line += "; but it refused " + rejections(res.Rejected)
	}
	return line, true
}

// explainFailure says what failed and what to change, in plain words,
// with the hint the mailer gives for the classic mistakes.
func explainFailure(server string, me *mailer.Error) string {
	var what string
	switch me.Step {
	case "connect":
		what = "could not connect to " + server
	case "tls", "starttls", "ehlo":
		what = "could not set up a protected session with " + server
	case "auth":
		what = server + " refused the login"
	default:
		what = server + " refused the mail"
	}
	if me.Code != 0 {
		what += fmt.Sprintf(" (it replied %d", me.Code)
		if me.Enhanced != ([3]int{}) {
			what += fmt.Sprintf(" %d.%d.%d", me.Enhanced[0], me.Enhanced[1], me.Enhanced[2])
		}
		what += fmt.Sprintf(" %q)", me.ServerText)
	} else if me.Err != nil {
		what += " (" + me.Err.Error() + ")"
	}
	if me.Hint == "" {
		return what
	}
	return what + ". What to change: " + me.Hint
}

func rejections(rs []mailer.Rejection) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%s (%d %s)", r.Rcpt, r.Err.Code, r.Err.ServerText)
	}
	return strings.Join(parts, ", ")
}
