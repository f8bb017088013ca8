package smtpin

import (
	"encoding/base64"
	"net/netip"
	"strings"
	"testing"
)

// Probes an open-relay scanner would try. Each is refused, logged once
// with the client's address, counted, and the listener keeps serving.

func TestRecipientOutsideRelayToIsDeniedAndTheRestGoes(t *testing.T) {
	e := start(t, Options{})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO probe")
	c.expect("250")
	c.send("MAIL FROM:<x@casa.lan>")
	c.expect("250")
	for rcpt, reply := range map[string]string{
		"victim@gmail.com":           "550 5.7.1 relaying denied",
		"ops@example.org.evil.com":   "550 5.7.1 relaying denied",
		`"ops@example.org"@evil.com`: "501 5.1.3 bad recipient address syntax",
		// go-smtp unquotes the local part: a CR in it would reach the
		// upstream RCPT line.
		"\"x\rRCPT TO:<victim@gmail.com>\"@example.org": "501 5.1.3 bad recipient address syntax",
	} {
		c.send("RCPT TO:<" + rcpt + ">")
		c.exact(reply)
	}
	c.send("RCPT TO:<OPS@Example.ORG>") // relay_to compares without case
	c.expect("250")
	c.send("DATA")
	c.expect("354")
	c.send("Subject: hi", "", "body", ".")
	c.expect("250")

	m := e.sink.only(t)
	if strings.Join(m.Relay, ",") != "OPS@Example.ORG" || len(m.To) != 1 {
		t.Errorf("relay %q to %q", m.Relay, m.To)
	}
	if got := e.counts.get(RelayDenied); got != 4 {
		t.Errorf("relay_denied counted %d, want 4", got)
	}
	refs := e.log.refusals()
	if len(refs) != 4 {
		t.Fatalf("%d refusals logged, want 4 (one each): %v", len(refs), refs)
	}
	for _, r := range refs {
		if r[keyClient] != "127.0.0.1" || !strings.HasPrefix(r[keyReply].(string), "5") || r[keyRcpt] == nil {
			t.Errorf("refusal log %v", r)
		}
	}
}

func TestNoRecipientLeftMeansNoMail(t *testing.T) {
	e := start(t, Options{})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO probe", "MAIL FROM:<x@casa.lan>", "RCPT TO:<victim@gmail.com>", "DATA")
	c.expect("250")
	c.expect("250")
	c.expect("550 5.7.1")
	c.expect("502") // go-smtp: no recipient, no DATA
	if n := len(e.sink.Mails()); n != 0 {
		t.Errorf("the Sink got %d mails", n)
	}
}

func TestNestedMailStartsAFreshEnvelope(t *testing.T) {
	e := start(t, Options{})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev")
	c.expect("250")
	c.send("MAIL FROM:<a@casa.lan>", "RCPT TO:<ops@example.org>", "MAIL FROM:<b@casa.lan>", "RCPT TO:<alertd@"+testHost+">", "DATA")
	for range 4 {
		c.expect("250")
	}
	c.expect("354")
	c.send("Subject: second", "", "x", ".")
	c.expect("250")
	if m := e.sink.only(t); len(m.Relay) != 0 || strings.Join(m.To, ",") != "alertd@"+testHost {
		t.Errorf("the first MAIL's recipients survived: to %q relay %q", m.To, m.Relay)
	}
}

func TestClientOutsideNetworksGets554AtTheGreeting(t *testing.T) {
	e := start(t, Options{Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	c := dialFrom(t, e.addr, "127.0.0.2")
	c.exact("554 5.7.1 " + testHost + " does not accept mail from 127.0.0.2")
	c.send("EHLO me") // RFC 5321 §3.1: anything but QUIT is out of sequence
	c.expect("503")
	c.send("QUIT")
	c.expect("221")
	c.closed()
	if got := e.counts.get(RelayDenied); got != 1 {
		t.Errorf("relay_denied counted %d", got)
	}
	if refs := e.log.refusals(); len(refs) != 1 || refs[0][keyClient] != "127.0.0.2" {
		t.Errorf("refusals logged: %v", refs)
	}
	ok := dialFrom(t, e.addr, "127.0.0.1") // and the listener still serves its own
	ok.expect("220")
}

func TestAuthIsRequiredWhenUsersAreSet(t *testing.T) {
	e := start(t, Options{Users: Users{"arduino": "s3cret"}})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev")
	if caps := strings.Join(c.reply(), "\n"); !strings.Contains(caps, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO does not offer AUTH over plaintext:\n%s", caps)
	}
	c.send("MAIL FROM:<x@casa.lan>")
	c.exact("530 5.7.0 authentication required")
	c.send("RCPT TO:<ops@example.org>")
	c.expect("502") // go-smtp: no MAIL yet
	if e.counts.get(AuthFailed) != 1 || len(e.sink.Mails()) != 0 {
		t.Errorf("auth_failed %d, mails %d", e.counts.get(AuthFailed), len(e.sink.Mails()))
	}
}

func TestWrongPasswordsEndTheSession(t *testing.T) {
	e := start(t, Options{Users: Users{"arduino": "s3cret"}})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev")
	c.expect("250")
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	c.send("AUTH PLAIN " + b64("\x00arduino\x00guess1"))
	c.exact("535 5.7.8 authentication failed")
	c.send("AUTH LOGIN", b64("nobody"), b64("guess2"))
	c.expect("334")
	c.expect("334")
	c.exact("535 5.7.8 authentication failed")
	c.send("AUTH PLAIN " + b64("\x00arduino\x00guess3"))
	c.exact("421 4.7.0 too many failed logins, closing connection")
	c.closed()
	if got := e.counts.get(AuthFailed); got != 3 {
		t.Errorf("auth_failed counted %d, want 3", got)
	}
	logs := e.log.String()
	if strings.Contains(logs, "guess") || strings.Contains(logs, "nobody") {
		t.Errorf("the log shows a password or an unknown user name:\n%s", logs)
	}
}

func TestForgedPlainAuthorizationIdentityIsRefused(t *testing.T) {
	e := start(t, Options{Users: Users{"arduino": "s3cret", "admin": "other"}})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev")
	c.expect("250")
	c.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("admin\x00arduino\x00s3cret")))
	c.expect("535 5.7.8")
	c.send("MAIL FROM:<x@casa.lan>")
	c.expect("530")
	if e.counts.get(AuthFailed) != 2 {
		t.Errorf("auth_failed counted %d, want 2", e.counts.get(AuthFailed))
	}
}

func TestMalformedAuthIsRefusedNotRetried(t *testing.T) {
	e := start(t, Options{Users: Users{"arduino": "s3cret"}})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev")
	c.expect("250")
	c.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("no-nuls-here")))
	c.exact("501 5.5.2 malformed AUTH response")
	c.send("AUTH CRAM-MD5")
	c.expect("504")
	c.send("AUTH PLAIN !!!") // not base64: go-smtp's own 454
	c.expect("454")
	if got := e.counts.get(AuthFailed); got != 3 {
		t.Errorf("auth_failed counted %d, want 3", got)
	}
	if refs := e.log.refusals(); len(refs) != 3 {
		t.Errorf("%d refusals logged, want 3: %v", len(refs), refs)
	}
}

func TestAuthWithoutUsersIsRefused(t *testing.T) {
	e := start(t, Options{})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev")
	if caps := strings.Join(c.reply(), "\n"); strings.Contains(caps, "AUTH") {
		t.Errorf("AUTH offered without users:\n%s", caps)
	}
	c.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00a\x00b")))
	c.expect("502")
}

// TestHeaderInjectionThroughTheSubject: a sketch that pastes user input
// into "Subject: " may send a lone CR or LF inside the line. In a CRLF
// mail that is text, not a line break: the relayed copy has one Subject
// and no header the device did not write as one.
func TestHeaderInjectionThroughTheSubject(t *testing.T) {
	e := start(t, Options{})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev")
	c.expect("250")
	data := "From: sensor@casa.lan\r\nSubject: hot\rBcc: victim@evil.org\nX-Injected: yes\r\n\r\nbody"
	c.mail("sensor@casa.lan", []string{"ops@example.org"}, data, "250")
	m := e.sink.only(t)
	head, _, _ := strings.Cut(string(m.Relayed), "\r\n\r\n")
	for _, line := range strings.Split(head, "\r\n") {
		if strings.ContainsAny(line, "\r\n") {
			t.Errorf("a lone CR or LF is left in %q", line)
		}
		if strings.HasPrefix(line, "Bcc:") || strings.HasPrefix(line, "X-Injected:") {
			t.Errorf("injected header %q", line)
		}
	}
	if n := strings.Count(head, "\r\nSubject:"); n != 1 {
		t.Errorf("%d Subject lines in:\n%s", n, head)
	}
	if m.Subject != "hot Bcc: victim@evil.org X-Injected: yes" {
		t.Errorf("subject %q", m.Subject)
	}
}

func TestSenderAddressSyntax(t *testing.T) {
	e := start(t, Options{})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev")
	c.expect("250")
	for from, reply := range map[string]string{
		"sensor@[192.168.1.5]":   "250",
		"sensor@[IPv6:fe80::1]":  "250",
		"":                       "250", // the null sender of bounces
		"\"a\rb\"@casa.lan":      "501 5.1.7",
		"sensor@[not an ip]":     "501",
		"sensor@casa.lan\x01":    "501 5.1.7",
		"d\xc3\xa9vice@casa.lan": "501 5.1.7", // no SMTPUTF8 upstream
	} {
		c.send("MAIL FROM:<" + from + ">")
		if got := c.reply(); !strings.HasPrefix(got[len(got)-1], reply) {
			t.Errorf("MAIL FROM:<%q>: %q, want %s", from, got, reply)
		}
	}
}
