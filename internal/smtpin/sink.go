package smtpin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"time"

	"github.com/alertd/alertd/internal/event"
)

// Sink is what the SMTP listener needs from the rest of alertd.
//
// Accept commits what the mail asks for: the event for the rules, and when
// m.Relay is not empty the relayed copy in the outbox. It returns only
// after that is durable (fsync'd): the device hears 250 right after, so a
// crash after the reply must lose nothing. The rate limit and the dedupe
// are the Sink's decisions, from its persisted state; the listener only
// turns the Outcome into the SMTP reply. An error means nothing was
// committed: the device hears 451 and sends the mail again later.
//
// Accept is called from many connections at once. ctx ends when the
// listener is closed or Options.AcceptTimeout passes.
type Sink interface {
	Accept(ctx context.Context, m *Mail) (Outcome, error)
}

// Mail is one mail a device handed over, checked and prepared.
type Mail struct {
	// ID names the mail in alertd's Received header and in logs.
	ID       string
	Received time.Time

	Client netip.Addr // the device's address
	Helo   string     // the name it gave in HELO or EHLO, sanitised
	User   string     // the AUTH identity; "" without AUTH
	// Sender is who the mail is from, as the event's topic level: the
	// AUTH user, else the envelope sender's local part (lower-cased),
	// else the HELO name, made a valid MQTT topic level.
	Sender string

	EnvelopeFrom string   // MAIL FROM, "" for the null sender <>
	To           []string // every accepted recipient, in RCPT order
	// Relay holds the recipients that matched relay_to, to be delivered
	// upstream; empty when the mail was addressed to alertd only.
	Relay []string
	// Relayed is the message to deliver upstream (nil when Relay is
	// empty): a Received header prepended, From set to Options.From, the
	// device's From as Reply-To (unless it set one) and X-Original-From,
	// Sender, Return-Path, Bcc and DKIM signatures removed, Message-ID and
	// Date kept or created, header lines rebuilt so a stray CR or LF cannot
	// start a new header, and the body as the device sent it.
	Relayed []byte

	MessageID string // with its angle brackets, kept or created
	From      string // the device's From header, decoded ("" if none)
	Subject   string // decoded, one line
	Text      string // the text/plain part (or the HTML part as text), capped at Options.MaxTextBytes

	// Event is the mail for the rules: Source "smtp", Topic
	// "smtp/<Sender>", Payload {"from","to","subject","text"}.
	Event event.Event
}

// DedupeKey says which mails are "the same mail sent again": the same
// Sender, Subject and Text. The Sink may hold back a mail whose key it saw
// within its cooldown.
func (m *Mail) DedupeKey() string {
	h := sha256.New()
	for _, s := range []string{m.Sender, m.Subject, m.Text} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Outcome is the Sink's answer for a mail it did not fail on.
type Outcome struct {
	Held Held
	// RetryAfter tells a rate-limited device when to try again (shown in
	// the 450 reply); zero says nothing.
	RetryAfter time.Duration
	// ID is the Sink's name for what it committed (an outbox key), shown
	// in the 250 reply; "" shows Mail.ID.
	ID string
}

// Held says why the Sink kept a mail back.
type Held string

const (
	// NotHeld: the mail is committed and goes on (250).
	NotHeld Held = ""
	// HeldRateLimited: the device sent too many mails; nothing was
	// committed and the device should try later (450 4.7.1).
	HeldRateLimited Held = "rate_limited"
	// HeldDuplicate: the same mail came within the cooldown; it is held
	// back and counted, and the device hears 250 so it does not retry.
	HeldDuplicate Held = "duplicate"
)

// Result labels what became of a mail or an attempt, for a counter such
// as alertd_ingress_smtp_total{result}.
type Result string

const (
	// Accepted: the Sink committed the mail or held it as a duplicate.
	Accepted Result = "accepted"
	// RelayDenied: a recipient outside relay_to, or a client outside
	// networks (refused at the greeting).
	RelayDenied Result = "relay_denied"
	// AuthFailed: wrong credentials, a forged PLAIN authorization
	// identity, a malformed AUTH exchange, or MAIL without AUTH.
	AuthFailed Result = "auth_failed"
	// TooBig: a message, or a SIZE declared at MAIL, above
	// max_message_bytes.
	TooBig Result = "too_big"
	// RateLimited: the Sink's rate limit, or the connection limit.
	RateLimited Result = "rate_limited"
	// Error: anything else refused: bad commands, timeouts, too many
	// recipients, a Sink failure.
	Error Result = "error"
)
