package smtpin

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/emersion/go-message/textproto"
)

func headerOf(t *testing.T, msg []byte) textproto.Header {
	t.Helper()
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg)))
	if err != nil {
		t.Fatalf("the relayed message's header does not parse: %v\n%s", err, msg)
	}
	return h
}

// sendOne sends data from sensor@casa.lan to rcpts over a raw session and
// returns what the Sink got.
func sendOne(t *testing.T, e *env, rcpts []string, data string) *Mail {
	t.Helper()
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO kitchen-sensor")
	c.expect("250")
	c.mail("sensor@casa.lan", rcpts, data, "250")
	c.send("QUIT")
	c.expect("221")
	return e.sink.only(t)
}

func TestRelayedMessage(t *testing.T) {
	e := start(t, Options{From: "Alertas <alertd@example.org>"})
	data := strings.Join([]string{
		"From: Kitchen <sensor@casa.lan>",
		"To: ops@example.org",
		"Subject: Temperatura alta",
		"Message-ID: <abc.123@casa.lan>",
		"Date: Sat, 14 Mar 2026 15:00:00 +0100",
		"Bcc: secret@example.org",
		"Sender: sketch@casa.lan",
		"",
		"31.5 C in the kitchen",
		"..leading dot kept",
	}, "\r\n")
	m := sendOne(t, e, []string{"ops@example.org"}, data)
	rel := string(m.Relayed)
	wantReceived := "Received: from kitchen-sensor ([127.0.0.1])\r\n\tby alertd.test (alertd) with ESMTP id " + m.ID +
		";\r\n\tSat, 14 Mar 2026 15:09:26 +0000\r\n"
	if !strings.HasPrefix(rel, wantReceived) {
		t.Errorf("the relayed message does not start with Received:\n%s", rel)
	}
	h := headerOf(t, m.Relayed)
	want := map[string]string{
		"From":            `"Kitchen via Alertas" <alertd@example.org>`,
		"Reply-To":        "Kitchen <sensor@casa.lan>",
		"X-Original-From": "Kitchen <sensor@casa.lan>",
		"Subject":         "Temperatura alta",
		"Message-Id":      "<abc.123@casa.lan>",
		"Date":            "Sat, 14 Mar 2026 15:00:00 +0100",
		"To":              "ops@example.org",
		"Bcc":             "",
		"Sender":          "",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if n := len(h.Values("From")); n != 1 {
		t.Errorf("%d From fields", n)
	}
	if !strings.HasSuffix(rel, "\r\n\r\n31.5 C in the kitchen\r\n.leading dot kept\r\n") {
		t.Errorf("body changed:\n%q", rel)
	}
	if m.MessageID != "<abc.123@casa.lan>" {
		t.Errorf("MessageID %q", m.MessageID)
	}
}

func TestRelayedMessageGetsMessageIDAndDate(t *testing.T) {
	e := start(t, Options{})
	m := sendOne(t, e, []string{"ops@example.org"}, "Subject: bare\r\n\r\nx")
	h := headerOf(t, m.Relayed)
	if id := h.Get("Message-Id"); id != m.MessageID || !strings.HasSuffix(id, "@"+testHost+">") {
		t.Errorf("Message-ID %q (Mail says %q)", id, m.MessageID)
	}
	if d := h.Get("Date"); d != "Sat, 14 Mar 2026 15:09:26 +0000" {
		t.Errorf("Date %q", d)
	}
	if r := h.Get("Reply-To"); r != "<sensor@casa.lan>" {
		t.Errorf("Reply-To %q, want the envelope sender", r)
	}
}

func TestMailToAlertdIsAnEventOnly(t *testing.T) {
	e := start(t, Options{})
	m := sendOne(t, e, []string{"Alarm@ALERTD.test"}, "From: sensor@casa.lan\r\nSubject: door open\r\n\r\nfront door")
	if len(m.Relay) != 0 || m.Relayed != nil {
		t.Errorf("mail to alertd is relayed: %q", m.Relay)
	}
	if m.Event.Source != "smtp" || m.Event.Topic != "smtp/sensor" || !m.Event.Received.Equal(fixedNow) {
		t.Errorf("event %+v", m.Event)
	}
	var p map[string]any
	if err := json.Unmarshal(m.Event.Payload, &p); err != nil {
		t.Fatalf("payload %s: %v", m.Event.Payload, err)
	}
	want := `{"from":"sensor@casa.lan","to":["Alarm@ALERTD.test"],"subject":"door open","text":"front door"}`
	if string(m.Event.Payload) != want {
		t.Errorf("payload\n%s\nwant\n%s", m.Event.Payload, want)
	}
}

func TestTopicLevel(t *testing.T) {
	for in, want := range map[string]string{
		"arduino":                "arduino",
		"a/b+c#d\x00e f":         "a_b_c_d_e_f",
		"caf\xe9":                "caf_",
		`"quoted"`:               "quoted",
		strings.Repeat("x", 100): strings.Repeat("x", maxSenderLen),
		strings.Repeat("é", 40):  strings.Repeat("é", maxSenderLen/2),
		"":                       "",
	} {
		if got := topicLevel(in); got != want {
			t.Errorf("topicLevel(%q) = %q, want %q", in, got, want)
		}
	}
	env := envelope{from: "Kitchen.Sensor@casa.lan", helo: "esp"}
	if got := senderOf(env); got != "kitchen.sensor" {
		t.Errorf("sender from the envelope: %q", got)
	}
	if got := senderOf(envelope{helo: "esp32-garage"}); got != "esp32-garage" {
		t.Errorf("sender for <>: %q", got)
	}
}
