package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const smtpHead = `smtp:
  host: smtp.office365.com
  from: "Alerts <alerts@contoso.com>"
  username: alerts@contoso.com
`

func TestOAuth2Good(t *testing.T) {
	cfg, err := Load(strings.NewReader(smtpHead+`  auth: xoauth2
  oauth2:
    provider: microsoft
    tenant: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
    refresh_token_file: /var/lib/alertd/oauth-token.json
`), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.SMTP.OAuth2
	if o.Grant != "refresh_token" || o.Flow != "device" || cfg.SMTP.Port != 587 {
		t.Errorf("defaults: grant %q flow %q port %d", o.Grant, o.Flow, cfg.SMTP.Port)
	}
	g, err := Load(strings.NewReader(`smtp:
  host: smtp.gmail.com
  from: me@gmail.com
  username: me@gmail.com
  oauth2: {provider: google, client_id: x.apps.googleusercontent.com, client_secret: s, refresh_token_file: t.json}
`), "g.yaml")
	if err != nil || g.SMTP.OAuth2.Flow != "loopback" || g.SMTP.Auth != "auto" {
		t.Fatalf("google: %v %+v", err, g)
	}
}

func TestOAuth2Mistakes(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"token auth without oauth2", smtpHead + "  auth: xoauth2\n", "5:9: smtp.auth: xoauth2 needs an smtp.oauth2 section"},
		{"password and oauth2", smtpHead + "  password: pw\n  oauth2: {provider: google, client_id: c, refresh_token_file: t}\n",
			"smtp.oauth2 and smtp.password are both set"},
		{"plain with oauth2", smtpHead + "  auth: plain\n  oauth2: {provider: google, client_id: c, refresh_token_file: t}\n",
			"5:9: smtp.auth: plain does not use smtp.oauth2"},
		{"http token url off loopback", smtpHead + "  oauth2: {provider: custom, client_id: c, refresh_token_file: t, token_url: \"http://idp.example/token\"}\n",
			"must be https"},
		{"no refresh token file", smtpHead + "  oauth2: {provider: google, client_id: c}\n", "smtp.oauth2.refresh_token_file is required"},
		{"microsoft without tenant", smtpHead + "  oauth2: {provider: microsoft, client_id: c, refresh_token_file: t}\n", "smtp.oauth2.tenant is required"},
		{"client credentials without secret", smtpHead + "  oauth2: {provider: microsoft, tenant: t, client_id: c, grant: client_credentials}\n",
			"client_secret (or client_secret_file) is required"},
		{"unknown provider", smtpHead + "  oauth2: {provider: yahoo, client_id: c, refresh_token_file: t}\n", `"yahoo" is not one of microsoft, google, custom`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := strings.Join(loadErrors(t, "a.yaml", []byte(c.yaml)), "\n")
			if !strings.Contains(got, c.want) {
				t.Errorf("errors:\n%s\nwant %q", got, c.want)
			}
		})
	}
}

// The client secret can come from a file, and never prints.
func TestOAuth2ClientSecretFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("very-secret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "a.yaml")
	if err := os.WriteFile(path, []byte(smtpHead+`  oauth2: {provider: microsoft, tenant: t, client_id: c, grant: client_credentials, client_secret_file: secret}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SMTP.OAuth2.ClientSecret.Reveal() != "very-secret-value" {
		t.Errorf("secret %q", cfg.SMTP.OAuth2.ClientSecret.Reveal())
	}
	var b bytes.Buffer
	b.WriteString(cfg.SMTP.OAuth2.ClientSecret.String())
	if strings.Contains(b.String(), "very-secret") {
		t.Error("the secret prints")
	}
}
