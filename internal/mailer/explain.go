package mailer

import (
	"fmt"
	"net/mail"
	"os"
	"strings"
	"time"
)

// Explain says in plain words what failed at server (host:port) and, for
// the classic mistakes, what to change: the sentence send-test ends with
// and the SMTP preflight logs.
func (e *Error) Explain(server string) string {
	var what string
	switch e.Step {
	case "connect":
		what = "could not connect to " + server
	case "tls", "starttls", "ehlo":
		what = "could not set up a protected session with " + server
	case "auth":
		what = server + " refused the login"
	case "spool":
		what = "could not write the spool"
	default:
		what = server + " refused the mail"
	}
	if e.Code != 0 {
		what += fmt.Sprintf(" (it replied %d", e.Code)
		if e.Enhanced != ([3]int{}) {
			what += fmt.Sprintf(" %d.%d.%d", e.Enhanced[0], e.Enhanced[1], e.Enhanced[2])
		}
		what += fmt.Sprintf(" %q)", e.ServerText)
	} else if e.Err != nil {
		what += " (" + e.Err.Error() + ")"
	}
	if e.Hint == "" {
		return what
	}
	return what + ". What to change: " + e.Hint
}

// Refused lists refused recipients with the server's words.
func Refused(rs []Rejection) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%s (%d %s)", r.Rcpt, r.Err.Code, r.Err.ServerText)
	}
	return strings.Join(parts, ", ")
}

// TestMessage is the mail `alertd send-test` sends from from to to,
// naming in its body the way it went (target), and its envelope.
func TestMessage(from string, to []string, target string) ([]byte, Envelope, error) {
	env := Envelope{}
	if a, err := mail.ParseAddress(from); err == nil {
		env.From = a.Address
	}
	for _, t := range to {
		a, err := mail.ParseAddress(t)
		if err != nil {
			return nil, env, fmt.Errorf("%q is not an address: %v", t, err)
		}
		env.To = append(env.To, a.Address)
	}
	host, _ := os.Hostname()
	now := time.Now()
	msg, err := Compose(Mail{
		From: from, To: to, Subject: "alertd test mail", Date: now, MessageID: NewMessageID(now, from),
		Body: fmt.Sprintf("This is a test mail from alertd send-test on %s, sent at %s through %s.\n\n"+
			"If you can read it, alerts will reach you the same way.\n", host, now.Format(time.RFC1123Z), target),
		Headers: map[string]string{"X-Alertd-Test": "send-test"},
	})
	return msg, env, err
}
