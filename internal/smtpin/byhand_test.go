package smtpin

import (
	"encoding/base64"
	"strings"
	"testing"
)

// TestAuthLoginByHand replays the session of "Cómo enviar Correo
// Electrónico a mano, Parte II: SMTP Autenticado" line by line, as typed
// into telnet: the LOGIN prompts must be the article's base64 byte for
// byte, since device libraries compare them.
func TestAuthLoginByHand(t *testing.T) {
	e := start(t, Options{
		Users:   Users{"nombre.apellido": "P@assw0rd"},
		RelayTo: []string{"@gmail.com", "@hotmail.com"},
	})
	c := dial(t, e.addr)
	c.expect("220 " + testHost)
	c.send("HELO mipc")
	c.expect("250")
	c.send("AUTH LOGIN")
	c.exact("334 VXNlcm5hbWU6") // "Username:"
	c.send("bm9tYnJlLmFwZWxsaWRv")
	c.exact("334 UGFzc3dvcmQ6") // "Password:"
	c.send("UEBhc3N3MHJk")
	c.expect("235 ") // the article's server says "235 2.7.0 Authentication successful"; go-smtp words it its own way
	c.send("MAIL FROM:<usuario@gmail.com>")
	c.expect("250")
	c.send("RCPT TO:<amigo@gmail.com>")
	c.expect("250")
	c.send("RCPT TO:<otro@hotmail.com>")
	c.expect("250")
	c.send("DATA")
	c.expect("354")
	c.send("From: Usuario Gonzalez", "subject: mail de prueba", "", "Hola, esto es una prueba.", ".")
	c.expect("250 2.0.0 OK: queued as ")
	c.send("QUIT")
	c.expect("221")

	m := e.sink.only(t)
	if m.User != "nombre.apellido" || m.Sender != "nombre.apellido" || m.Subject != "mail de prueba" || m.From != "Usuario Gonzalez" {
		t.Errorf("mail: user %q sender %q subject %q from %q", m.User, m.Sender, m.Subject, m.From)
	}
	if strings.Join(m.Relay, " ") != "amigo@gmail.com otro@hotmail.com" {
		t.Errorf("relay %q", m.Relay)
	}
	h := headerOf(t, m.Relayed)
	// The article's From has no address: replies go to the envelope sender.
	want := map[string]string{
		"From":            `"Usuario Gonzalez via alertd" <alertd@example.org>`,
		"Reply-To":        "<usuario@gmail.com>",
		"X-Original-From": "Usuario Gonzalez",
		"Subject":         "mail de prueba",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("relayed %s: %q, want %q", k, got, v)
		}
	}
	if m.Text != "Hola, esto es una prueba." {
		t.Errorf("text %q", m.Text)
	}
	if e.counts.get(Accepted) != 1 {
		t.Errorf("accepted counted %d times", e.counts.get(Accepted))
	}
}

// TestDeviceDialects covers what device libraries do that a strict
// client would not: lower-case commands, a bare IP or an address literal
// as the EHLO name, AUTH LOGIN with the user on the AUTH line, and AUTH
// sent before the EHLO reply was read.
func TestDeviceDialects(t *testing.T) {
	e := start(t, Options{Users: Users{"arduino": "s3cret"}})
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cases := []struct {
		name string
		talk func(c *raw)
	}{
		{"lower case, bare IP, LOGIN with initial response", func(c *raw) {
			c.send("ehlo 192.168.1.50")
			c.expect("250")
			c.send("auth login " + b64("arduino"))
			c.exact("334 UGFzc3dvcmQ6")
			c.send(b64("s3cret"))
			c.expect("235")
		}},
		{"address literal, pipelined EHLO and AUTH PLAIN", func(c *raw) {
			c.send("EHLO [192.0.2.1]", "AUTH PLAIN "+b64("\x00arduino\x00s3cret"))
			c.expect("250")
			c.expect("235")
		}},
		{"HELO, PLAIN with a blank authorization identity", func(c *raw) {
			c.send("HELO esp32")
			c.expect("250")
			c.send("AUTH PLAIN " + b64(" \x00arduino\x00s3cret"))
			c.expect("235")
		}},
		{"PLAIN naming the user as its own authorization identity", func(c *raw) {
			c.send("EHLO esp32")
			c.expect("250")
			c.send("AUTH PLAIN")
			c.expect("334")
			c.send(b64("arduino\x00arduino\x00s3cret"))
			c.expect("235")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, e.addr)
			c.t = t
			c.expect("220")
			tc.talk(c)
			c.send("mail from:<sensor@casa.lan>", "rcpt to:<ops@example.org>", "data")
			c.expect("250")
			c.expect("250")
			c.expect("354")
			c.send("Subject: "+tc.name, "", "ok", ".", "quit")
			c.expect("250")
			c.expect("221")
		})
	}
	ms := e.sink.Mails()
	if len(ms) != len(cases) {
		t.Fatalf("the Sink got %d mails, want %d", len(ms), len(cases))
	}
	for _, m := range ms {
		if m.User != "arduino" || m.Event.Topic != "smtp/arduino" {
			t.Errorf("%q: user %q topic %q", m.Subject, m.User, m.Event.Topic)
		}
	}
	if !strings.Contains(string(ms[1].Relayed), "Received: from [192.0.2.1] ([127.0.0.1])") {
		t.Errorf("the address literal is not in Received:\n%s", ms[1].Relayed)
	}
}
