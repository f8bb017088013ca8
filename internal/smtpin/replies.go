package smtpin

import (
	"fmt"
	"time"

	"github.com/emersion/go-smtp"
)

// The replies alertd gives of its own accord. go-smtp writes any
// *smtp.SMTPError a session returns as it is, and turns other errors into
// 451 (MAIL, RCPT) or 554 (DATA), so every refusal here is typed.
var (
	errRelayDenied    = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "relaying denied"}
	errAuthRequired   = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	errAuthFailed     = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "authentication failed"}
	errAuthForged     = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "the authorization identity must be empty or the user's own"}
	errTooManyLogins  = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "too many failed logins, closing connection"}
	errBadSender      = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "bad sender address syntax"}
	errBadRecipient   = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "bad recipient address syntax"}
	errNoRecipients   = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "no valid recipients"}
	errAuthMalformed  = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "malformed AUTH response"}
	errAuthDisabled   = &smtp.SMTPError{Code: 502, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "AUTH is not enabled on this server"}
	errAuthMechanism  = &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "use AUTH PLAIN or AUTH LOGIN"}
	errTooManyRcpts   = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "too many recipients"}
	errTooBig         = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "message too big"}
	errLineTooLong    = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "line too long, closing connection"}
	errTimeout        = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "timeout, closing connection"}
	errTooManyRefused = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "too many refused commands, closing connection"}
	errClosing        = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "closing connection"}
	errCommit         = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "could not store the mail, try again later"}
)

// Limits on a misbehaving session: after this many refused commands, or
// failed logins, alertd says 421 and hangs up, so a looping sketch or a
// password guesser holds no slot and floods no log. go-smtp itself ends a
// session after four unknown or malformed commands.
const (
	maxRefusals    = 10
	maxAuthFailure = 3
)

// accepted is the 250 after the final dot. go-smtp writes a returned
// *smtp.SMTPError as it is, so a code-250 one picks the text.
func accepted(text string) error {
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: text}
}

// rateLimited is the 450 for a device the Sink holds back: a plain
// sentence, since people read these replies in a sketch's serial log.
func rateLimited(after time.Duration) *smtp.SMTPError {
	msg := "too many mails from this client, try again later"
	if after > 0 {
		msg = fmt.Sprintf("too many mails from this client, try again in %s", after.Round(time.Second))
	}
	return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: msg}
}
