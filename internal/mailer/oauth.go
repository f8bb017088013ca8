package mailer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SASL mechanism names of the token logins.
const (
	XOAuth2     = "XOAUTH2"
	OAuthBearer = sasl.OAuthBearer
)

// TokenSource supplies the access token for XOAUTH2 and OAUTHBEARER.
type TokenSource interface {
	AccessToken(ctx context.Context) (string, error)
	// Invalidate forgets the current token: the server refused it.
	Invalidate()
}

// tokenClient is XOAUTH2 (Google's and Microsoft's documented format,
// "user=U^Aauth=Bearer T^A^A") or OAUTHBEARER (RFC 7628). When the server
// refuses the token it sends a base64 JSON challenge first; the client
// keeps it for the explanation and answers as each mechanism requires (an
// empty line for XOAUTH2, ^A for OAUTHBEARER), after which the server sends
// its final 5xx.
type tokenClient struct {
	mech       string
	user, tok  string
	host       string
	port       int
	challenged []byte // the server's error challenge, if any
}

func (c *tokenClient) Start() (string, []byte, error) {
	if c.mech == XOAuth2 {
		return XOAuth2, []byte("user=" + c.user + "\x01auth=Bearer " + c.tok + "\x01\x01"), nil
	}
	ir := "n,a=" + strings.NewReplacer("=", "=3D", ",", "=2C").Replace(c.user) + ","
	if c.host != "" {
		ir += "\x01host=" + c.host
	}
	if c.port != 0 {
		ir += "\x01port=" + strconv.Itoa(c.port)
	}
	return OAuthBearer, []byte(ir + "\x01auth=Bearer " + c.tok + "\x01\x01"), nil
}

func (c *tokenClient) Next(challenge []byte) ([]byte, error) {
	if c.challenged != nil {
		return nil, errors.New("the server sent a second challenge after refusing the token")
	}
	c.challenged = append([]byte{}, challenge...)
	if c.mech == XOAuth2 {
		return []byte{}, nil
	}
	return []byte{0x01}, nil
}

// tokenRefusal puts the server's JSON error challenge in plain words.
func tokenRefusal(challenge []byte) string {
	var ch struct {
		Status string `json:"status"`
		Scope  string `json:"scope"`
	}
	if len(challenge) == 0 || json.Unmarshal(challenge, &ch) != nil || ch.Status == "" {
		return ""
	}
	var words string
	switch ch.Status {
	case "401", "invalid_token":
		words = "the access token was not accepted: expired, revoked, or issued for another account than smtp.username"
	case "400", "invalid_request":
		words = "the server could not use the token: check that smtp.username is the mailbox the token was issued for"
	case "403", "insufficient_scope":
		words = "the token lacks the mail scope"
	default:
		words = "the server refused the token"
	}
	if ch.Scope != "" {
		words += " (the server wants scope " + ch.Scope + ")"
	}
	return "status " + ch.Status + ": " + words
}

// tokenLogin logs in with a token, once more with a fresh token if the
// server refused the first (revoked before its expiry): a refusal of the
// fresh one is the operator's to fix.
func (t *SMTPTransport) tokenLogin(ctx context.Context, c *smtp.Client, mech string) error {
	o := t.opts
	for try := 0; ; try++ {
		tok, err := o.Tokens.AccessToken(ctx)
		if err != nil {
			return tokenError(err)
		}
		tc := &tokenClient{mech: mech, user: o.Username, tok: tok, host: o.Host, port: o.Port}
		err = c.Auth(tc)
		if err == nil {
			return nil
		}
		me := t.classify("auth", err)
		if me.Code == 0 {
			return me // the connection broke
		}
		if words := tokenRefusal(tc.challenged); words != "" {
			me.Hint = words
		} else if me.Kind == KindAuth {
			me.Hint = "the server refused the " + mech + " login: check smtp.username (the mailbox) and that SMTP AUTH is enabled for it; " +
				"for Microsoft 365, the app needs the SMTP.Send permission (SMTP.SendAsApp for client_credentials)"
		}
		if me.Kind != KindAuth || try > 0 {
			return me
		}
		o.Tokens.Invalidate()
		t.log.Debug("the server refused the access token; trying once with a fresh one", "mechanism", mech)
	}
}

// tokenError is a token that could not be had: the provider refused
// (auth: stays queued until fixed), or could not be reached (retried).
func tokenError(err error) *Error {
	e := &Error{Kind: KindNetwork, Step: "oauth2", Err: err}
	var h interface{ Hint() string }
	if errors.As(err, &h) {
		e.Hint = h.Hint()
	}
	var tmp interface{ Temporary() bool }
	if errors.As(err, &tmp) && !tmp.Temporary() {
		e.Kind = KindAuth
	}
	return e
}

func (t *SMTPTransport) noTokenMechanism(offered string) *Error {
	return &Error{Kind: KindConfig, Step: "auth",
		Err:  fmt.Errorf("the server offers AUTH %s but not %s", offered, strings.ToUpper(t.opts.Auth)),
		Hint: "set smtp.auth to auto, xoauth2 or oauthbearer to match (Microsoft 365 offers XOAUTH2; Gmail both)"}
}
