package smtptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// XOAuth2 is the mechanism name Google and Microsoft use.
const XOAuth2 = "XOAUTH2"

var (
	errTokenMicrosoft = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 3}, Message: "Authentication unsuccessful"}
	errTokenGoogle    = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Username and Password not accepted"}
	errTokenSyntax    = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Cannot decode the token login"}
)

// tokenServer is the server side of XOAUTH2 (user=U^Aauth=Bearer T^A^A)
// and OAUTHBEARER (RFC 7628: n,a=U,^Ahost=H^Aport=P^Aauth=Bearer T^A^A).
type tokenServer struct {
	mech    string
	se      *session
	refused bool // the error challenge went out; the client's answer ends it
}

func (a *tokenServer) Next(resp []byte) ([]byte, bool, error) {
	if a.refused {
		want := []byte{}
		if a.mech == sasl.OAuthBearer {
			want = []byte{0x01}
		}
		if !bytes.Equal(resp, want) {
			return nil, true, errors.New("the client answered the error challenge wrongly")
		}
		return nil, true, errTokenGoogle
	}
	if resp == nil {
		return []byte{}, false, nil // no initial response: ask for it
	}
	user, token, ok := parseTokenLogin(a.mech, resp)
	if !ok {
		return nil, true, errTokenSyntax
	}
	a.se.s.record("AUTH " + a.mech + " " + user)
	if err := a.se.s.scripted("AUTH"); err != nil {
		return nil, true, err
	}
	if a.se.s.opts.Token(user, token) {
		a.se.user = user
		return nil, true, nil
	}
	if a.se.s.opts.MicrosoftStyle {
		return nil, true, errTokenMicrosoft
	}
	a.refused = true
	status := "401"
	if a.mech == sasl.OAuthBearer {
		status = "invalid_token"
	}
	ch, _ := json.Marshal(map[string]string{"status": status, "schemes": "bearer", "scope": "https://mail.google.com/"})
	return ch, false, nil
}

func parseTokenLogin(mech string, b []byte) (user, token string, ok bool) {
	s := string(b)
	if mech == XOAuth2 {
		rest, found := strings.CutSuffix(s, "\x01\x01")
		u, auth, found2 := strings.Cut(rest, "\x01")
		if !found || !found2 || !strings.HasPrefix(u, "user=") || !strings.HasPrefix(auth, "auth=Bearer ") {
			return "", "", false
		}
		return u[len("user="):], auth[len("auth=Bearer "):], true
	}
	gs2, kvs, found := strings.Cut(s, ",\x01")
	if !found || !strings.HasPrefix(gs2, "n,") {
		return "", "", false
	}
	if a := strings.TrimPrefix(gs2, "n,"); strings.HasPrefix(a, "a=") {
		user = strings.NewReplacer("=2C", ",", "=3D", "=").Replace(a[2:])
	}
	kvs, found = strings.CutSuffix(kvs, "\x01\x01")
	if !found {
		return "", "", false
	}
	for _, kv := range strings.Split(kvs, "\x01") {
		if t, ok := strings.CutPrefix(kv, "auth=Bearer "); ok {
			token = t
		}
	}
	return user, token, token != ""
}
