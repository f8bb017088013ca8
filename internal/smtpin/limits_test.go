package smtpin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestTooBigMessageIsRefusedAndTheSessionGoesOn(t *testing.T) {
	e := start(t, Options{MaxMessageBytes: 64 << 10})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev")
	if caps := strings.Join(c.reply(), "\n"); !strings.Contains(caps, "SIZE 65536") {
		t.Errorf("EHLO does not advertise SIZE 65536:\n%s", caps)
	}
	line := strings.Repeat("x", 998)
	big := "Subject: big\r\n\r\n" + strings.Repeat(line+"\r\n", 10<<20/1000) // 10 MB
	c.mail("sensor@casa.lan", []string{"ops@example.org"}, big, "552 5.3.4")
	c.send("NOOP")
	c.expect("250")
	c.mail("sensor@casa.lan", []string{"ops@example.org"}, "Subject: small\r\n\r\nok", "250")
	if m := e.sink.only(t); m.Subject != "small" {
		t.Errorf("the Sink got %q", m.Subject)
	}
	if got := e.counts.get(TooBig); got != 1 {
		t.Errorf("too_big counted %d", got)
	}
}

func TestSizeDeclaredAtMailIsRefused(t *testing.T) {
	e := start(t, Options{MaxMessageBytes: 1000})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev", "MAIL FROM:<a@casa.lan> SIZE=5000", "MAIL FROM:<a@casa.lan> SIZE=500")
	c.expect("250")
	c.expect("552 5.3.4") // go-smtp's own reply: seen, logged and counted all the same
	c.expect("250")
	if e.counts.get(TooBig) != 1 || len(e.log.refusals()) != 1 {
		t.Errorf("too_big %d, refusals %v", e.counts.get(TooBig), e.log.refusals())
	}
}

// TestThousandRecipientsAreBounded: past MaxRecipients each RCPT gets
// 452; after a few refusals the session ends rather than answer (and log)
// a thousand of them.
func TestThousandRecipientsAreBounded(t *testing.T) {
	e := start(t, Options{MaxRecipients: 5})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev")
	c.expect("250")
	cmds := []string{"MAIL FROM:<a@casa.lan>"}
	for i := range 1000 {
		cmds = append(cmds, fmt.Sprintf("RCPT TO:<u%d@example.org>", i))
	}
	c.send(cmds...)
	c.expect("250")
	var codes []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			break
		}
		codes = append(codes, l[:3])
	}
	joined := strings.Join(codes, " ")
	want := "250 250 250 250 250 " + strings.TrimSpace(strings.Repeat("452 ", maxRefusals-1)) + " 421"
	if !strings.HasPrefix(joined, want) {
		t.Errorf("replies %s\nwant them to begin %s", joined, want)
	}
	if len(codes) > 1001 || strings.Count(joined, "250") != 5 {
		t.Errorf("%d replies, %d accepted", len(codes), strings.Count(joined, "250"))
	}
	if n := len(e.log.refusals()); n != maxRefusals {
		t.Errorf("%d refusals logged, want %d", n, maxRefusals)
	}
	ok := dial(t, e.addr)
	ok.expect("220")
}

// TestSlowLorisIsEndedWhileOthersAreServed: a client dripping a command
// is ended by the idle timeout; a device that talks meanwhile is served.
func TestSlowLorisIsEndedWhileOthersAreServed(t *testing.T) {
	e := start(t, Options{IdleTimeout: 300 * time.Millisecond})
	slow := dial(t, e.addr)
	slow.expect("220")
	begun := time.Now()
	slow.nc.Write([]byte("EH"))
	go func() { // a byte every 100ms never completes the line
		for _, b := range "LO slow" {
			time.Sleep(100 * time.Millisecond)
			if _, err := slow.nc.Write([]byte{byte(b)}); err != nil {
				return
			}
		}
	}()
	fast := dial(t, e.addr)
	fast.expect("220")
	fast.send("EHLO fast")
	fast.expect("250")
	fast.mail("a@casa.lan", []string{"ops@example.org"}, "Subject: served\r\n\r\nx", "250")
	fast.send("QUIT")
	fast.expect("221")

	slow.expect("421 4.4.2")
	slow.closed()
	if d := time.Since(begun); d > 3*time.Second {
		t.Errorf("the slow client lasted %s", d)
	}
	if e.counts.get(Error) != 1 || len(e.log.refusals()) != 1 {
		t.Errorf("error %d, refusals %v", e.counts.get(Error), e.log.refusals())
	}
}

func TestDataTimeoutEndsTheSession(t *testing.T) {
	e := start(t, Options{DataTimeout: 300 * time.Millisecond})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev", "MAIL FROM:<a@casa.lan>", "RCPT TO:<ops@example.org>", "DATA")
	c.expect("250")
	c.expect("250")
	c.expect("250")
	c.expect("354")
	c.send("Subject: never ends")
	c.expect("421 4.4.2")
	c.closed()
	if len(e.sink.Mails()) != 0 || e.counts.get(Error) != 1 {
		t.Errorf("mails %d, error %d", len(e.sink.Mails()), e.counts.get(Error))
	}
}

func TestConnectionLimit(t *testing.T) {
	e := start(t, Options{MaxConns: 2})
	a, b := dial(t, e.addr), dial(t, e.addr)
	a.expect("220")
	b.expect("220")
	c := dial(t, e.addr)
	c.expect("421 4.7.0")
	c.closed()
	a.send("QUIT")
	a.expect("221")
	a.closed()
	waitConns(t, e, 1) // the slot is freed once the listener has seen the close
	d := dial(t, e.addr)
	d.expect("220")
	if e.counts.get(RateLimited) < 1 {
		t.Errorf("rate_limited counted %d", e.counts.get(RateLimited))
	}
}

func TestBadCommandsEndTheSession(t *testing.T) {
	e := start(t, Options{})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("XYZZY", "PLUGH", "FROB", "")
	for range 4 {
		c.expect("50")
	}
	c.expect("500 5.5.1 Too many errors")
	c.closed()
	if got := e.counts.get(Error); got != 5 {
		t.Errorf("error counted %d, want 5 (each refusal once)", got)
	}
}

func TestLineTooLongEndsTheSession(t *testing.T) {
	e := start(t, Options{MaxLineLength: 100})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO " + strings.Repeat("x", 200))
	c.expect("500 5.4.0")
	c.closed()
	if got := e.counts.get(Error); got != 1 {
		t.Errorf("error counted %d", got)
	}
}

// TestSinkAnswers: the Sink's decisions become the replies devices act on.
func TestSinkAnswers(t *testing.T) {
	cases := []struct {
		name   string
		out    Outcome
		err    error
		reply  string
		result Result
	}{
		{"committed", Outcome{ID: "outbox-42"}, nil, "250 2.0.0 OK: queued as outbox-42", Accepted},
		{"duplicate", Outcome{Held: HeldDuplicate}, nil, "250 2.0.0 OK: same as a recent mail, held back", Accepted},
		{"rate limited", Outcome{Held: HeldRateLimited, RetryAfter: 90 * time.Second}, nil,
			"450 4.7.1 too many mails from this client, try again in 1m30s", RateLimited},
		{"store failed", Outcome{}, errors.New("disk full"), "451 4.3.0 could not store the mail, try again later", Error},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, Options{})
			e.sink.answer = func(context.Context, *Mail) (Outcome, error) { return tc.out, tc.err }
			c := dial(t, e.addr)
			c.expect("220")
			c.send("EHLO dev")
			c.expect("250")
			if got := c.mail("a@casa.lan", []string{"ops@example.org"}, "Subject: x\r\n\r\ny", ""); got != tc.reply {
				t.Errorf("reply %q, want %q", got, tc.reply)
			}
			if e.counts.get(tc.result) != 1 {
				t.Errorf("%s counted %d", tc.result, e.counts.get(tc.result))
			}
		})
	}
}

// TestReplyWaitsForTheCommit: the device hears 250 only once Accept has
// returned, so a crash after the reply loses nothing.
func TestReplyWaitsForTheCommit(t *testing.T) {
	e := start(t, Options{})
	gate := make(chan struct{})
	e.sink.answer = func(context.Context, *Mail) (Outcome, error) { <-gate; return Outcome{}, nil }
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev", "MAIL FROM:<a@casa.lan>", "RCPT TO:<ops@example.org>", "DATA")
	for range 3 {
		c.expect("250")
	}
	c.expect("354")
	c.send("Subject: x", "", "y", ".")
	c.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if l, err := c.r.ReadString('\n'); err == nil {
		t.Fatalf("replied %q before the commit", l)
	}
	close(gate)
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	c.expect("250")
}

// TestCloseCancelsACommitInFlight: Close does not wait forever for a
// stuck Sink: Accept's context ends, and Close returns after Accept did.
func TestCloseCancelsACommitInFlight(t *testing.T) {
	e := start(t, Options{})
	entered, returned := make(chan struct{}), make(chan struct{})
	e.sink.answer = func(ctx context.Context, _ *Mail) (Outcome, error) {
		close(entered)
		<-ctx.Done()
		close(returned)
		return Outcome{}, ctx.Err()
	}
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev", "MAIL FROM:<a@casa.lan>", "RCPT TO:<ops@example.org>", "DATA")
	for range 3 {
		c.expect("250")
	}
	c.expect("354")
	c.send("Subject: x", "", "y", ".")
	<-entered
	done := make(chan struct{})
	go func() { e.srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	select {
	case <-returned:
	default:
		t.Error("Close returned before Accept did")
	}
}
