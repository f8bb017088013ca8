package mailer

import (
	"errors"
	"strings"

	"github.com/emersion/go-sasl"
)

// loginClient is AUTH LOGIN that answers the first challenge with the user
// name and the second with the password, whatever the prompts say: servers
// send "Username:", "User Name\x00", "username:" and more, and go-sasl's
// client accepts only "Password:". It sends no initial response, which
// every LOGIN server accepts.
type loginClient struct {
	user, pass string
	step       int
}

func (c *loginClient) Start() (string, []byte, error) { return sasl.Login, nil, nil }

func (c *loginClient) Next([]byte) ([]byte, error) {
	c.step++
	switch c.step {
	case 1:
		return []byte(c.user), nil
	case 2:
		return []byte(c.pass), nil
	}
	return nil, errors.New("the server sent more LOGIN challenges than user name and password")
}

// chooseAuth picks the SASL client for the configured mechanism among those
// the server offers ("auto": PLAIN if offered, else LOGIN). It returns a nil
// client when no login is configured.
func (t *SMTPTransport) chooseAuth(supports func(string) bool, offered string) (sasl.Client, *Error) {
	o := t.opts
	if o.Auth == "none" || o.Username == "" {
		return nil, nil
	}
	mech := strings.ToUpper(o.Auth)
	if o.Auth == "auto" {
		switch {
		case supports(sasl.Plain):
			mech = sasl.Plain
		case supports(sasl.Login):
			mech = sasl.Login
		default:
			return nil, t.noMechanism(offered)
		}
	} else if !supports(mech) {
		return nil, t.noMechanism(offered)
	}
	if mech == sasl.Plain {
		return sasl.NewPlainClient("", o.Username, o.Password), nil
	}
	return &loginClient{user: o.Username, pass: o.Password}, nil
}

func (t *SMTPTransport) noMechanism(offered string) *Error {
	e := &Error{Kind: KindConfig, Step: "auth"}
	switch {
	case offered == "" && t.opts.Security == SecurityNone:
		e.Err = errors.New("the server offers no AUTH on this unencrypted connection")
		e.Hint = "servers offer login only after TLS; set security: starttls or tls"
	case offered == "":
		e.Err = errors.New("the server offers no AUTH")
		e.Hint = "remove smtp.username, or set auth: none, if this server relays without login"
	default:
		e.Err = errors.New("the server offers AUTH " + offered + " but not " + strings.ToUpper(t.opts.Auth))
		e.Hint = "set smtp.auth to auto, plain or login to match"
	}
	return e
}

// chooseTokenAuth picks XOAUTH2 or OAUTHBEARER among those the server
// offers ("auto": XOAUTH2, which Microsoft 365 and Gmail both take, else
// OAUTHBEARER).
func (t *SMTPTransport) chooseTokenAuth(supports func(string) bool, offered string) (string, *Error) {
	switch t.opts.Auth {
	case "xoauth2", "oauthbearer":
		mech := strings.ToUpper(t.opts.Auth)
		if !supports(mech) {
			if offered == "" {
				return "", t.noMechanism(offered)
			}
			return "", t.noTokenMechanism(offered)
		}
		return mech, nil
	}
	switch {
	case supports(XOAuth2):
		return XOAuth2, nil
	case supports(OAuthBearer):
		return OAuthBearer, nil
	case offered == "":
		return "", t.noMechanism(offered)
	}
	return "", &Error{Kind: KindConfig, Step: "auth",
		Err:  errors.New("the server offers AUTH " + offered + " but no token login (XOAUTH2, OAUTHBEARER)"),
		Hint: "this server takes passwords: remove smtp.oauth2 and set smtp.password"}
}
