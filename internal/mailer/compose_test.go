package mailer

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
)

// parseMail reads msg as a mail client would and returns its header.
func parseMail(t *testing.T, msg []byte) *mail.Header {
	t.Helper()
	r, err := mail.CreateReader(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("a mail reader cannot read the message: %v\n%s", err, msg)
	}
	defer r.Close()
	h := r.Header
	return &h
}

// readBody returns the decoded text of a single-part mail.
func readBody(t *testing.T, msg []byte) string {
	t.Helper()
	r, err := mail.CreateReader(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p, err := r.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(p.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func headerSection(msg []byte) string {
	h, _, _ := strings.Cut(string(msg), "\r\n\r\n")
	return h
}

func sample() Mail {
	date := time.Date(2026, 7, 14, 15, 4, 5, 0, time.FixedZone("CEST", 2*3600))
	return Mail{
		From:      "Alertas Salón <alerts@example.org>",
		To:        []string{"Ops <ops@example.org>", "jefa@example.org"},
		Subject:   subject,
		Body:      "El invernadero está a 31 °C.\nUmbral: 30 °C.\n",
		Date:      date,
		MessageID: NewMessageID(date, "alerts@example.org"),
		Headers:   map[string]string{"X-Alertd-Rule": "invernadero"},
	}
}

func TestComposeHeaders(t *testing.T) {
	m := sample()
	msg, err := Compose(m)
	if err != nil {
		t.Fatal(err)
	}
	h := parseMail(t, msg)
	from, err := h.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Address != "alerts@example.org" || from[0].Name != "Alertas Salón" {
		t.Errorf("From %v (%v)", from, err)
	}
	to, err := h.AddressList("To")
	if err != nil || len(to) != 2 || to[0].Address != "ops@example.org" || to[1].Address != "jefa@example.org" {
		t.Errorf("To %v (%v)", to, err)
	}
	if d, err := h.Date(); err != nil || !d.Equal(m.Date) {
		t.Errorf("Date %v (%v), want %v", d, err, m.Date)
	}
	if id, err := h.MessageID(); err != nil || id != m.MessageID || !strings.HasSuffix(id, "@example.org") {
		t.Errorf("Message-ID %q (%v), want %q", id, err, m.MessageID)
	}
	for k, want := range map[string]string{
		"MIME-Version":   "1.0",
		"Auto-Submitted": "auto-generated", // RFC 3834: no vacation replies to alerts
		"X-Alertd-Rule":  "invernadero",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if ct, params, err := h.ContentType(); err != nil || ct != "text/plain" || !strings.EqualFold(params["charset"], "utf-8") {
		t.Errorf("Content-Type %s %v (%v), want text/plain; charset=utf-8", ct, params, err)
	}
	if h.Has("In-Reply-To") || h.Has("Bcc") {
		t.Errorf("unexpected headers:\n%s", headerSection(msg))
	}
	if !bytes.Contains(msg, []byte("\r\n\r\n")) || bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) {
		t.Errorf("lines must end in CRLF:\n%q", msg)
	}
}

// Accents survive in the subject (RFC 2047 encoded words) and the body
// (UTF-8, quoted-printable), and the header section stays 7-bit for
// servers without SMTPUTF8.
func TestComposeRoundTripsAccents(t *testing.T) {
	for _, subj := range []string{
		subject,
		"Humedad baja en el baño: 12 % — revisar ¿ventilación?",
		"Température élevée: 31 °C (capteur « salon »)",
		strings.Repeat("Señal débil ", 12), // longer than one encoded word
	} {
		m := sample()
		m.Subject = subj
		msg, err := Compose(m)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := parseMail(t, msg).Subject(); err != nil || got != subj {
			t.Errorf("subject %q came back as %q (%v)", subj, got, err)
		}
		for _, c := range headerSection(msg) {
			if c > 0x7e {
				t.Errorf("8-bit character %q in the header section:\n%s", c, headerSection(msg))
				break
			}
		}
		if body := strings.ReplaceAll(readBody(t, msg), "\r\n", "\n"); body != m.Body {
			t.Errorf("body came back as %q, want %q", body, m.Body)
		}
	}
}

func TestComposeThreadsFollowUps(t *testing.T) {
	m := sample()
	m.InReplyTo = "first.alert@example.org"
	msg, err := Compose(m)
	if err != nil {
		t.Fatal(err)
	}
	h := parseMail(t, msg)
	for _, k := range []string{"In-Reply-To", "References"} {
		if ids, err := h.MsgIDList(k); err != nil || !slices.Equal(ids, []string{"first.alert@example.org"}) {
			t.Errorf("%s: %v (%v)", k, ids, err)
		}
	}
}

// Values a device or a template can influence must not add a header (a
// Bcc would send the alert to a stranger). Compose may refuse them or
// encode them; either way the mail read back has only its own headers.
func TestComposeCannotBeMadeToAddAHeader(t *testing.T) {
	const evil = "\r\nBcc: evil@x"
	for _, tc := range []struct {
		name        string
		edit        func(*Mail)
		mustCompose bool
	}{
		{name: "subject CRLF", edit: func(m *Mail) { m.Subject = "hot" + evil }},
		{name: "subject LF", edit: func(m *Mail) { m.Subject = "hot\nBcc: evil@x" }},
		{name: "subject CR", edit: func(m *Mail) { m.Subject = "hot\rBcc: evil@x" }},
		{name: "header value", edit: func(m *Mail) { m.Headers = map[string]string{"X-Alertd-Device": "salon" + evil} }},
		{name: "header name", edit: func(m *Mail) { m.Headers = map[string]string{"X-Device" + evil: "salon"} }},
		{name: "from display name", edit: func(m *Mail) { m.From = "\"Alertas" + evil + "\" <alerts@example.org>" }},
		{name: "recipient", edit: func(m *Mail) { m.To = []string{"ops@example.org" + evil} }},
		{name: "in-reply-to", edit: func(m *Mail) { m.InReplyTo = "a@example.org>" + evil }},
		{name: "body", edit: func(m *Mail) { m.Body = evil + "\r\n\r\ntext" }, mustCompose: true}, // the body is data, never headers
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := sample()
			tc.edit(&m)
			msg, err := Compose(m)
			if err != nil {
				if tc.mustCompose {
					t.Fatalf("refused: %v", err)
				}
				return // refused: nothing is sent
			}
			h := parseMail(t, msg)
			if h.Has("Bcc") || strings.Contains(headerSection(msg), "\r\nBcc:") {
				t.Fatalf("a Bcc header got in:\n%s", headerSection(msg))
			}
			for _, k := range []string{"From", "To"} {
				if addrs, _ := h.AddressList(k); slices.ContainsFunc(addrs, func(a *mail.Address) bool { return strings.Contains(a.Address, "evil") }) {
					t.Errorf("%s gained an address: %v", k, addrs)
				}
			}
		})
	}
}

func TestNewMessageIDIsUniqueAndOrdered(t *testing.T) {
	t0 := time.Date(2026, 7, 14, 15, 4, 5, 0, time.UTC)
	a, b := NewMessageID(t0, "Alertas <alerts@example.org>"), NewMessageID(t0, "alerts@example.org")
	c := NewMessageID(t0.Add(time.Millisecond), "alerts@example.org")
	if a == b || !strings.HasSuffix(a, "@example.org") {
		t.Errorf("ids %q %q: want distinct, at the sender's domain", a, b)
	}
	if !(a < c && b < c) {
		t.Errorf("id %q of a later mail does not sort after %q", c, b)
	}
	if id := NewMessageID(t0, "not an address"); !strings.HasSuffix(id, "@alertd.invalid") {
		t.Errorf("id %q for a sender without domain", id)
	}
}
