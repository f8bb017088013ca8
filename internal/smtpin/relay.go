package smtpin

import (
	"bytes"
	"fmt"
	"mime"
	"net/mail"
	"net/netip"
	"strings"
	"time"
)

// dropped are the device's header fields the relayed copy leaves out:
// From, Sender and Return-Path name alertd's sender instead (providers
// refuse mail "from" an address that did not log in), Bcc must never
// travel, a DKIM signature breaks once From changes, a device's own
// X-Original-From would be mistaken for alertd's, and Message-ID is
// written once, kept or created.
var dropped = map[string]bool{"From": true, "Sender": true, "Return-Path": true, "Bcc": true,
	"Dkim-Signature": true, "X-Original-From": true, "Message-Id": true}

// relayed builds the message to deliver upstream.
func (s *Server) relayed(m *Mail, msg *parsed, env envelope) []byte {
	var b bytes.Buffer
	b.WriteString(s.received(m, env))
	writeLines(&b, "From: "+s.fromHeader(m, msg))
	from := msg.field("From")
	switch {
	case msg.field("Reply-To") != nil: // the device chose its own
	case from != nil && parsesAsAddresses(from.value()):
		writeLines(&b, from.renamed("Reply-To")...)
	case validMailbox(env.from, true): // as Mail checked it; the header must not rely on that
		writeLines(&b, "Reply-To: <"+env.from+">")
	}
	if from != nil {
		writeLines(&b, from.renamed("X-Original-From")...)
	}
	for _, f := range msg.fields {
		switch {
		case dropped[f.key]:
		case f.key == "Subject" && !isASCII(f.value()):
			writeLines(&b, encodeSubject(decodeHeader(f.value())))
		default:
			writeLines(&b, f.lines...)
		}
	}
	writeLines(&b, "Message-ID: "+m.MessageID)
	if msg.field("Date") == nil {
		writeLines(&b, "Date: "+m.Received.Format(time.RFC1123Z))
	}
	b.WriteString("\r\n")
	b.Write(msg.body)
	return b.Bytes()
}

// encodeSubject writes a subject sent as raw 8-bit text as RFC 2047
// encoded words, one per folded line: without SMTPUTF8 upstream, a header
// must be ASCII, and a Latin-1 subject would show as garbage.
func encodeSubject(s string) string {
	return "Subject: " + strings.ReplaceAll(mime.QEncoding.Encode("utf-8", oneLine(s, maxSubjectLen)), " ", "\r\n ")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func writeLines(b *bytes.Buffer, lines ...string) {
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
}

func parsesAsAddresses(v string) bool {
	list, err := (&mail.AddressParser{WordDecoder: wordDecoder}).ParseList(v)
	return err == nil && len(list) > 0
}

// fromHeader is Options.From, named for the device so a reader sees who
// wrote: "Kitchen sensor via alertd" <alertd@example.org>.
func (s *Server) fromHeader(m *Mail, msg *parsed) string {
	a := *s.pol.from
	via := a.Name
	if via == "" {
		via = "alertd"
	}
	a.Name = deviceName(m, msg.get("From")) + " via " + via
	return a.String()
}

// received is the trace header of RFC 5321 §4.4, with the transmission
// type of RFC 3848. go-smtp does not tell HELO from EHLO, so a HELO
// client shows as ESMTP too.
func (s *Server) received(m *Mail, env envelope) string {
	proto := "ESMTP"
	if env.tls {
		proto += "S"
	}
	if env.user != "" {
		proto += "A"
	}
	return fmt.Sprintf("Received: from %s (%s)\r\n\tby %s (alertd) with %s id %s;\r\n\t%s\r\n",
		m.Helo, addressLiteral(m.Client), s.opts.Hostname, proto, m.ID, m.Received.Format(time.RFC1123Z))
}

// addressLiteral is RFC 5321 §4.1.3's form of an address.
func addressLiteral(ip netip.Addr) string {
	if ip.Is4() {
		return "[" + ip.String() + "]"
	}
	return "[IPv6:" + strings.TrimPrefix(ip.String(), "[") + "]"
}
