package smtptest

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
)

// Message is one accepted mail, with its envelope and parsed as a mail
// client would read it.
type Message struct {
	From     string       // MAIL FROM
	To       []string     // RCPT TO that were accepted
	Data     []byte       // the bytes after DATA, as received
	Header   *mail.Header // nil when the data is not a mail go-message can read
	Subject  string       // decoded (RFC 2047)
	Body     string       // first text part, transfer encoding and charset decoded
	AuthUser string       // who logged in on the session ("" without AUTH; the strict peer leaves it empty)
}

// parse reads a mail as a client would; a mail it cannot parse keeps only
// its raw bytes, for the test to report.
func parse(data []byte) Message {
	m := Message{Data: data}
	r, err := mail.CreateReader(bytes.NewReader(data))
	if err != nil {
		return m
	}
	defer r.Close()
	h := r.Header
	m.Header = &h
	m.Subject, _ = h.Subject()
	if p, err := r.NextPart(); err == nil {
		b, _ := io.ReadAll(p.Body)
		m.Body = string(b)
	}
	return m
}

// pollMessages waits for n mails from list, which reads them from a place
// that cannot signal arrivals (the strict peer's directory).
func pollMessages(t testing.TB, n int, timeout time.Duration, list func() []Message) []Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		msgs := list()
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtptest: %d of %d mails arrived within %s", len(msgs), n, timeout)
		}
		<-tick.C
	}
}
