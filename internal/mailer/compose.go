package mailer

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"
)

// Mail is a rendered alert, ready to become message bytes.
type Mail struct {
	From    string   // "Name <addr>" or "addr"
	To      []string // header recipients (the envelope uses the same list)
	Subject string   // one line; Compose refuses CR and LF
	Body    string   // UTF-8 text
	// HTML, when set, is the same mail as HTML (inline styles only, no
	// remote content): the message becomes multipart/alternative, text
	// first, so a client that shows plain text still has everything.
	HTML string
	// Urgent marks the mail important (Importance: high, X-Priority: 1),
	// for severity: critical.
	Urgent    bool
	Date      time.Time
	MessageID string            // without angle brackets; see NewMessageID
	InReplyTo string            // Message-ID this mail follows up (threads an alert's mails)
	Headers   map[string]string // extra X- headers, values single-line
}

// NewMessageID returns a unique id whose left part sorts by time, so spool
// files named after it list in order.
func NewMessageID(t time.Time, from string) string {
	var r [8]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%s.%s@%s", t.UTC().Format("20060102T150405.000000000Z"), hex.EncodeToString(r[:]), domainOf(from))
}

func domainOf(from string) string {
	if a, err := mail.ParseAddress(from); err == nil {
		if _, d, ok := strings.Cut(a.Address, "@"); ok && d != "" {
			return d
		}
	}
	return "alertd.invalid"
}

// Compose builds the message. Every value that could come from a device
// (subject, body) is either encoded (RFC 2047 subject) or confined to the
// body, so no payload can add a header or a recipient.
func Compose(m Mail) ([]byte, error) {
	if strings.ContainsAny(m.Subject, "\r\n") {
		return nil, fmt.Errorf("compose: subject contains a line break")
	}
	from, err := mail.ParseAddress(m.From)
	if err != nil {
		return nil, fmt.Errorf("compose: from %q: %w", m.From, err)
	}
	to := make([]*mail.Address, 0, len(m.To))
	for _, t := range m.To {
		a, err := mail.ParseAddress(t)
		if err != nil {
			return nil, fmt.Errorf("compose: to %q: %w", t, err)
		}
		to = append(to, a)
	}
	var h mail.Header
	h.SetAddressList("From", []*mail.Address{from})
	h.SetAddressList("To", to)
	h.SetDate(m.Date)
	h.SetMessageID(m.MessageID)
	if m.InReplyTo != "" {
		h.SetMsgIDList("In-Reply-To", []string{m.InReplyTo})
		h.SetMsgIDList("References", []string{m.InReplyTo})
	}
	h.SetSubject(m.Subject)
	// RFC 3834: automatic mail; vacation responders must not answer it.
	h.Set("Auto-Submitted", "auto-generated")
	for k, v := range m.Headers {
		if strings.ContainsAny(k, "\r\n: ") || strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("compose: header %s has a line break", k)
		}
		h.Set(k, v)
	}
	if m.Urgent {
		h.Set("Importance", "high")
		h.Set("X-Priority", "1")
	}
	body := strings.ToValidUTF8(m.Body, "\uFFFD")
	var buf bytes.Buffer
	if m.HTML == "" {
		h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
		w, err := mail.CreateSingleInlineWriter(&buf, h)
		if err != nil {
			return nil, fmt.Errorf("compose: %w", err)
		}
		if _, err := w.Write([]byte(body)); err != nil {
			return nil, fmt.Errorf("compose: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("compose: %w", err)
		}
		return buf.Bytes(), nil
	}
	w, err := mail.CreateInlineWriter(&buf, h) // multipart/alternative
	if err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	for _, part := range []struct{ typ, text string }{{"text/plain", body}, {"text/html", strings.ToValidUTF8(m.HTML, "\uFFFD")}} {
		var ph mail.InlineHeader
		ph.SetContentType(part.typ, map[string]string{"charset": "utf-8"})
		pw, err := w.CreatePart(ph)
		if err != nil {
			return nil, fmt.Errorf("compose: %w", err)
		}
		if _, err := pw.Write([]byte(part.text)); err != nil {
			return nil, fmt.Errorf("compose: %w", err)
		}
		if err := pw.Close(); err != nil {
			return nil, fmt.Errorf("compose: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	return buf.Bytes(), nil
}
