package mailer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/emersion/go-smtp"
)

// Kind says whose problem a delivery failure is, and so what to do next.
type Kind int

const (
	// KindTemporary is a 4xx reply: the server asks to try again later.
	KindTemporary Kind = iota
	// KindNetwork is a refused, dropped or stalled connection.
	KindNetwork
	// KindAuth is a rejected login (530, 534, 535, 538): the operator's
	// configuration, so the mail stays queued until it is fixed.
	KindAuth
	// KindConfig is a setting that cannot work with this server (wrong
	// security for the port, unknown CA, mechanism not offered); it stays
	// queued like KindAuth.
	KindConfig
	// KindPermanent is a 5xx reply about this mail: no retry.
	KindPermanent
)

// String is the value of the kind label in alertd_mail_failed_total.
func (k Kind) String() string {
	switch k {
	case KindTemporary:
		return "temporary"
	case KindNetwork:
		return "network"
	case KindAuth:
		return "auth"
	case KindConfig:
		return "config"
	case KindPermanent:
		return "permanent"
	}
	return "unknown"
}

// Error is a failed delivery step, with the server's own words when it
// answered and a plain-words hint for the classic configuration mistakes.
// It never holds the password.
type Error struct {
	Kind       Kind
	Step       string // connect, tls, starttls, ehlo, auth, mail, rcpt, data, spool
	Code       int    // SMTP reply code, 0 when the server did not answer
	Enhanced   [3]int // enhanced status code, zero when none was sent
	ServerText string // what the server said
	Hint       string // what to change, in plain words
	Err        error  // underlying error (network, TLS)
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("smtp ")
	b.WriteString(e.Step)
	switch {
	case e.Code != 0:
		fmt.Fprintf(&b, ": server replied %d", e.Code)
		if e.Enhanced != ([3]int{}) {
			fmt.Fprintf(&b, " %d.%d.%d", e.Enhanced[0], e.Enhanced[1], e.Enhanced[2])
		}
		if e.ServerText != "" {
			fmt.Fprintf(&b, " %q", e.ServerText)
		}
	case e.Err != nil:
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Hint != "" {
		b.WriteString(" (")
		b.WriteString(e.Hint)
		b.WriteString(")")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether the mail should stay queued.
func (e *Error) Retryable() bool { return e.Kind != KindPermanent }

// Rejection is one recipient the server refused.
type Rejection struct {
	Rcpt string
	Err  *Error
}

// Outcome is what the server did with one message: the recipients it
// accepted (DATA answered 250) and those it refused.
type Outcome struct {
	Accepted []string
	Rejected []Rejection
}

// Envelope is the SMTP envelope: MAIL FROM and RCPT TO addresses, and
// the envelope id a delivery status notification (bounce) names.
type Envelope struct {
	From string
	To   []string
	ID   string // printable ASCII; "" for none
}

// classify turns an error from one SMTP step into an *Error, naming the
// mistake in plain words where it is a known one.
func (t *SMTPTransport) classify(step string, err error) *Error {
	var me *Error
	if errors.As(err, &me) {
		return me
	}
	e := &Error{Kind: KindNetwork, Step: step, Err: err}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		e.Err = nil
		e.Code = se.Code
		e.Enhanced = [3]int(se.EnhancedCode)
		if e.Enhanced == [3]int(smtp.NoEnhancedCode) {
			e.Enhanced = [3]int{}
		}
		e.ServerText = se.Message
		switch {
		case se.Code == 530 || se.Code == 534 || se.Code == 535 || se.Code == 538 || (step == "auth" && se.Code >= 500):
			e.Kind = KindAuth
			e.Hint = t.authHint(se.Code)
			if basicAuthOff(e) {
				e.Hint = "Microsoft 365 has turned off password login (basic authentication) for SMTP: " +
					"log in with a token instead (smtp.auth: xoauth2 and an smtp.oauth2 section; README: Microsoft 365 / Gmail with OAuth2)"
			}
		case se.Code == 454 && step == "auth":
			e.Kind = KindTemporary
			e.Hint = "the server could not check the credentials right now"
		case se.Code >= 400 && se.Code < 500:
			e.Kind = KindTemporary
		case step == "ehlo" || step == "starttls":
			e.Kind = KindConfig
		default:
			e.Kind = KindPermanent
		}
		return e
	}
	port := t.opts.Port
	var rh tls.RecordHeaderError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &rh) || strings.Contains(err.Error(), "wrong version number") ||
		strings.Contains(err.Error(), "first record does not look like a TLS handshake"):
		e.Kind = KindConfig
		e.Hint = fmt.Sprintf("port %d does not start with TLS; it expects security: starttls", port)
	case errors.As(err, &hostErr):
		e.Kind = KindConfig
		e.Hint = fmt.Sprintf("the server's certificate is not valid for %q; use the name on the certificate as smtp.host", t.opts.Host)
	case errors.As(err, &unknownCA) || errors.As(err, &invalid) || errors.As(err, &verify):
		e.Kind = KindConfig
		e.Hint = "the server's certificate is not trusted; for a private CA set smtp.tls.ca_file"
	case strings.Contains(err.Error(), "doesn't support STARTTLS"):
		e.Kind = KindConfig
		e.Err = errors.New("the server does not offer STARTTLS")
		e.Hint = fmt.Sprintf("port %d may expect security: tls (465), or the server has no TLS (security: none, only on a trusted network)", port)
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Hint = fmt.Sprintf("nothing listens on port %d of %s; check smtp.host and smtp.port (587 for STARTTLS, 465 for implicit TLS)", port, t.opts.Host)
	case errors.As(err, &dnsErr) && !dnsErr.IsTimeout:
		e.Hint = fmt.Sprintf("the name %q does not resolve; check smtp.host and this machine's DNS", t.opts.Host)
	case isTimeout(err) && t.opts.Security != SecurityTLS && (step == "connect" || step == "ehlo" || step == "starttls"):
		e.Hint = fmt.Sprintf("no greeting from the server; if port %d is an implicit-TLS port (465), set security: tls", port)
	case isTimeout(err):
		e.Hint = "the server stopped answering"
	}
	return e
}

func (t *SMTPTransport) authHint(code int) string {
	switch code {
	case 530:
		return "the server wants authentication, or TLS first; check smtp.username, smtp.password and smtp.security"
	case 534:
		return "the server wants a stronger login; for Gmail use an app password"
	case 538:
		return "the server wants TLS before login; set security: starttls or tls"
	}
	return "authentication failed: check smtp.username and smtp.password; for Gmail use an app password"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// basicAuthOff recognises Microsoft 365's refusals of password login:
// 535 5.7.139 (basic authentication disabled for the tenant or user) and
// 550 5.7.30 (basic authentication not supported).
func basicAuthOff(e *Error) bool {
	return e.Enhanced == [3]int{5, 7, 139} || e.Enhanced == [3]int{5, 7, 30} ||
		strings.Contains(strings.ToLower(e.ServerText), "basic authentication is disabled")
}
