package config

import (
	"net/url"
	"strings"
)

// OAuth2 is smtp.oauth2: where alertd gets the access tokens it logs in
// with (smtp.auth: xoauth2 or oauthbearer), for providers that ended
// password login (Microsoft 365, Gmail).
type OAuth2 struct {
	// Provider is microsoft, google or custom: it sets the endpoints and
	// default scopes.
	Provider string `yaml:"provider"`
	// TokenURL is the token endpoint: required for custom, an override
	// for the others (sovereign clouds).
	TokenURL string `yaml:"token_url"`
	// DeviceAuthURL and AuthURL are the device-code and authorization
	// endpoints `alertd oauth login` uses; custom only, or overrides.
	DeviceAuthURL string `yaml:"device_auth_url"`
	AuthURL       string `yaml:"auth_url"`
	// Tenant is the Microsoft Entra tenant (contoso.onmicrosoft.com or its
	// id); "organizations" works for delegated logins.
	Tenant           string `yaml:"tenant"`
	ClientID         string `yaml:"client_id"`
	ClientSecret     Secret `yaml:"client_secret"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// RefreshTokenFile holds the delegated flow's token (the JSON of
	// golang.org/x/oauth2's Token; {"refresh_token": "..."} is enough).
	// alertd rewrites it when the provider rotates the refresh token.
	RefreshTokenFile string `yaml:"refresh_token_file"`
	// Grant is refresh_token (a user's mailbox, the default) or
	// client_credentials (Microsoft app-only, SMTP.SendAsApp).
	Grant  string   `yaml:"grant"`
	Scopes []string `yaml:"scopes"`
	// Flow is how `alertd oauth login` gets the first token: device
	// (a code to enter on another machine; Microsoft's default) or
	// loopback (a browser redirect to 127.0.0.1; Google's default).
	Flow string `yaml:"flow"`

	Pos Positions `yaml:"-"`
}

// OAuthMechanism reports whether auth logs in with a token.
func OAuthMechanism(auth string) bool { return auth == "xoauth2" || auth == "oauthbearer" }

func (o *OAuth2) defaults() {
	if o.Grant == "" {
		o.Grant = "refresh_token"
	}
	if o.Flow == "" {
		switch {
		case o.Provider == "google":
			o.Flow = "loopback"
		case o.Provider == "custom" && o.DeviceAuthURL == "" && o.AuthURL != "":
			o.Flow = "loopback"
		default:
			o.Flow = "device"
		}
	}
}

func (o *OAuth2) validate(s *SMTP, add func(Pos, string, ...any)) {
	if !oneOf(o.Provider, "microsoft", "google", "custom") {
		add(o.Pos.At("provider"), "smtp.oauth2.provider: %q is not one of microsoft, google, custom", o.Provider)
	}
	if o.ClientID == "" {
		add(o.Pos.At("client_id"), "smtp.oauth2.client_id is required (the application (client) id of the app registration)")
	}
	if o.Provider == "custom" && o.TokenURL == "" {
		add(o.Pos.At("provider"), "smtp.oauth2.token_url is required with provider: custom")
	}
	if o.Provider == "microsoft" && o.Tenant == "" {
		add(o.Pos.At("provider"), "smtp.oauth2.tenant is required with provider: microsoft (e.g. contoso.onmicrosoft.com, or organizations)")
	}
	for _, k := range []struct{ key, v string }{{"token_url", o.TokenURL}, {"device_auth_url", o.DeviceAuthURL}, {"auth_url", o.AuthURL}} {
		if k.v == "" {
			continue
		}
		u, err := url.Parse(k.v)
		switch {
		case err != nil || u.Host == "":
			add(o.Pos.At(k.key), "smtp.oauth2.%s: %q is not a URL", k.key, k.v)
		case u.Scheme == "http" && isLoopback(u.Hostname()):
			// a token broker on the same machine
		case u.Scheme != "https":
			add(o.Pos.At(k.key), "smtp.oauth2.%s: %q must be https (the client secret and tokens travel over it)", k.key, k.v)
		}
	}
	if !oneOf(o.Grant, "refresh_token", "client_credentials") {
		add(o.Pos.At("grant"), "smtp.oauth2.grant: %q is not one of refresh_token, client_credentials", o.Grant)
	}
	if o.Grant == "refresh_token" && o.RefreshTokenFile == "" {
		add(o.Pos.At("client_id"), "smtp.oauth2.refresh_token_file is required (alertd oauth login -config FILE writes it), or set grant: client_credentials")
	}
	if o.Grant == "client_credentials" && o.ClientSecret.IsZero() && o.ClientSecretFile == "" {
		add(o.Pos.At("grant"), "smtp.oauth2.client_secret (or client_secret_file) is required with grant: client_credentials")
	}
	if o.Grant == "client_credentials" && o.Provider == "google" {
		add(o.Pos.At("grant"), "smtp.oauth2.grant: client_credentials is Microsoft's app-only flow; Gmail needs a user's refresh token (grant: refresh_token)")
	}
	if !oneOf(o.Flow, "device", "loopback") {
		add(o.Pos.At("flow"), "smtp.oauth2.flow: %q is not one of device, loopback", o.Flow)
	}
	for i, sc := range o.Scopes {
		if strings.TrimSpace(sc) == "" || strings.ContainsAny(sc, " \t\r\n") {
			add(o.Pos.At("scopes"), "smtp.oauth2.scopes[%d]: %q must be one scope without spaces", i, sc)
		}
	}
	if s.Username == "" {
		add(s.Pos.At("auth"), "smtp.username is required with auth: %s (the mailbox to send as)", s.Auth)
	}
}
