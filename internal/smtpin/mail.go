package smtpin

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/alertd/alertd/internal/event"
)

// Bounds on what a device's words become.
const (
	maxSenderLen  = 64  // bytes of the topic level
	maxSubjectLen = 998 // bytes: RFC 5322's line limit
	maxHeloLen    = 64
	maxNameLen    = 64 // bytes of the display name in the relayed From
)

// prepare turns what a session received into the Mail for the Sink.
func (s *Server) prepare(env envelope, data []byte) *Mail {
	msg := parseMessage(data)
	m := &Mail{
		ID: newID(), Received: s.opts.Now(),
		Client: env.ip, Helo: env.helo, User: env.user,
		EnvelopeFrom: env.from, To: env.to, Relay: env.relay,
		From:    oneLine(decodeHeader(msg.get("From")), maxSubjectLen),
		Subject: oneLine(decodeHeader(msg.get("Subject")), maxSubjectLen),
		Text:    bodyText(msg, s.opts.MaxTextBytes),
	}
	m.Sender = senderOf(env)
	m.MessageID = messageID(msg.get("Message-Id"), s.opts.Hostname)
	m.Event = event.Event{Source: "smtp", Topic: "smtp/" + m.Sender, Payload: payloadOf(m), Received: m.Received}
	if len(m.Relay) > 0 {
		m.Relayed = s.relayed(m, msg, env)
	}
	return m
}

// senderOf names who sent the mail, as one MQTT topic level: the AUTH
// user, else the envelope sender's local part, else the HELO name.
func senderOf(env envelope) string {
	local, _, _ := splitAddr(env.from)
	for _, s := range []string{env.user, strings.ToLower(local), env.helo} {
		if l := topicLevel(s); l != "" {
			return l
		}
	}
	return "unknown"
}

// topicLevel makes s a valid MQTT topic level (MQTT 3.1.1 §4.7): UTF-8,
// no '/', '+', '#', NUL or other control characters (each becomes '_',
// as does a space), at most maxSenderLen bytes.
func topicLevel(s string) string {
	s = strings.ToValidUTF8(s, "_")
	s = strings.Map(func(r rune) rune {
		if r == '/' || r == '+' || r == '#' || r == ' ' || unicode.IsControl(r) {
			return '_'
		}
		return r
	}, strings.Trim(s, `"`))
	return cutUTF8(s, maxSenderLen)
}

// payload is the event's JSON.
type payload struct {
	From    string   `json:"from"` // the envelope sender
	To      []string `json:"to"`
	Subject string   `json:"subject"`
	Text    string   `json:"text"`
}

func payloadOf(m *Mail) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // "Name <addr>" stays readable for rules
	_ = enc.Encode(payload{From: m.EnvelopeFrom, To: m.To, Subject: m.Subject, Text: m.Text})
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// oneLine keeps s to one line of at most max bytes.
func oneLine(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return cutUTF8(strings.TrimSpace(s), max)
}

// sanitizeHelo keeps the characters a domain or an address literal has,
// since the name lands in a Received header.
func sanitizeHelo(h string) string {
	h = strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_:[]", r)) {
			return r
		}
		return -1
	}, h)
	if h == "" {
		return "unknown"
	}
	return cutUTF8(h, maxHeloLen)
}

// messageID keeps the device's Message-ID when it looks like one
// (RFC 5322 §3.6.4: "<left@right>"), else makes one at hostname.
func messageID(v, hostname string) string {
	if len(v) > 2 && len(v) <= 250 && v[0] == '<' && v[len(v)-1] == '>' &&
		strings.Contains(v, "@") && !strings.ContainsAny(v[1:len(v)-1], " \t<>") {
		return v
	}
	return "<" + newID() + newID() + "@" + hostname + ">"
}

// newID is 64 random bits in hex.
func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// deviceName is how the relayed From names the device: the display name
// of its From, else the From text when it is no address (as in a mail
// typed by hand), else Sender. Never an address: a display name holding
// an address other than the sender's is what spam filters call phishing.
func deviceName(m *Mail, rawFrom string) string {
	list, err := (&mail.AddressParser{WordDecoder: wordDecoder}).ParseList(rawFrom)
	switch {
	case err == nil && len(list) > 0:
		if n := oneLine(list[0].Name, maxNameLen); n != "" && !strings.Contains(n, "@") {
			return n
		}
	case !strings.Contains(m.From, "@"):
		if n := oneLine(m.From, maxNameLen); n != "" {
			return n
		}
	}
	return m.Sender
}
