// Package oauth gets the access tokens alertd logs in to an SMTP server
// with (XOAUTH2, OAUTHBEARER) from an OAuth 2.0 provider: Microsoft Entra
// for Microsoft 365, Google for Gmail, or any token endpoint. A Source
// refreshes the token before it expires (and when the server refused it),
// keeps the refresh token file up to date when the provider rotates it,
// and rereads the file when `alertd oauth login` wrote a new one, so no
// restart is needed. Tokens are never logged and never part of an error.
package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"golang.org/x/oauth2"

	"github.com/alertd/alertd/internal/config"
)

// Endpoint returns c's provider endpoints, with any URL the configuration
// overrides.
func Endpoint(c *config.OAuth2) oauth2.Endpoint {
	var e oauth2.Endpoint
	switch c.Provider {
	case "microsoft":
		base := "https://login.microsoftonline.com/" + c.Tenant + "/oauth2/v2.0/"
		e = oauth2.Endpoint{AuthURL: base + "authorize", TokenURL: base + "token", DeviceAuthURL: base + "devicecode",
			AuthStyle: oauth2.AuthStyleInParams}
	case "google":
		e = oauth2.Endpoint{AuthURL: "https://accounts.google.com/o/oauth2/auth", TokenURL: "https://oauth2.googleapis.com/token",
			DeviceAuthURL: "https://oauth2.googleapis.com/device/code", AuthStyle: oauth2.AuthStyleInParams}
	}
	if c.TokenURL != "" {
		e.TokenURL = c.TokenURL
	}
	if c.AuthURL != "" {
		e.AuthURL = c.AuthURL
	}
	if c.DeviceAuthURL != "" {
		e.DeviceAuthURL = c.DeviceAuthURL
	}
	return e
}

// Scopes returns the configured scopes, or the provider's for sending mail.
func Scopes(c *config.OAuth2) []string {
	if len(c.Scopes) > 0 {
		return c.Scopes
	}
	switch {
	case c.Provider == "microsoft" && c.Grant == "client_credentials":
		return []string{"https://outlook.office365.com/.default"}
	case c.Provider == "microsoft":
		return []string{"https://outlook.office.com/SMTP.Send", "offline_access"}
	case c.Provider == "google":
		return []string{"https://mail.google.com/"}
	}
	return nil
}

func oauthConfig(c *config.OAuth2) *oauth2.Config {
	return &oauth2.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret.Reveal(), Endpoint: Endpoint(c), Scopes: Scopes(c)}
}

func withClient(ctx context.Context, client *http.Client) context.Context {
	if client == nil {
		return ctx
	}
	return context.WithValue(ctx, oauth2.HTTPClient, client)
}

// Error is a token that could not be had, in plain words, with what to do.
type Error struct {
	Err error
	// Auth: the provider refused (revoked refresh token, wrong client):
	// retrying will not help until the configuration or the login is
	// fixed. Otherwise the provider could not be reached: try again.
	Auth bool
	Fix  string
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Hint says what to do about it.
func (e *Error) Hint() string { return e.Fix }

// Temporary reports whether trying again later may succeed.
func (e *Error) Temporary() bool { return !e.Auth }

// explain turns a token endpoint's failure into an Error. It quotes the
// endpoint's error code and description, never the request or the body.
func explain(err error, c *config.OAuth2, what string) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return &Error{Err: fmt.Errorf("%s: %w", what, err), Fix: "check that this machine reaches " + Endpoint(c).TokenURL}
	}
	desc := firstLine(re.ErrorDescription)
	words := re.ErrorCode
	if desc != "" {
		words += ": " + desc
	}
	if words == "" && re.Response != nil {
		words = re.Response.Status
	}
	e := &Error{Err: fmt.Errorf("%s: the provider answered %s", what, words), Auth: true}
	switch re.ErrorCode {
	case "invalid_grant":
		e.Fix = "the refresh token was revoked or has expired (a password change, an admin, or months unused); run: alertd oauth login -config FILE"
	case "invalid_client", "unauthorized_client":
		e.Fix = "check smtp.oauth2.client_id and client_secret against the app registration"
	case "invalid_scope":
		e.Fix = "check smtp.oauth2.scopes (or leave them empty for the provider's defaults)"
	default:
		if re.Response != nil && re.Response.StatusCode >= 500 {
			e.Auth, e.Fix = false, "the provider has a problem; alertd tries again"
		}
	}
	return e
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}
