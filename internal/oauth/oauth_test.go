package oauth

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/oauth/oauthtest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func custom(srv *oauthtest.Server, dir string) *config.OAuth2 {
	c := &config.OAuth2{Provider: "custom", TokenURL: srv.TokenURL(), DeviceAuthURL: srv.DeviceAuthURL(), AuthURL: srv.AuthURL(),
		ClientID: "alertd-app", ClientSecret: config.NewSecret("app-s3cret"), RefreshTokenFile: filepath.Join(dir, "token.json")}
	c.Grant, c.Flow = "refresh_token", "device"
	return c
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A file holding only the refresh token is enough; the access token is
// refreshed once and reused until it nears expiry; a rotated refresh
// token is written back (0600) before the old one stops working.
func TestRefreshReuseAndRotation(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{ClientID: "alertd-app", ClientSecret: "app-s3cret", Rotate: true})
	dir := t.TempDir()
	c := custom(srv, dir)
	rt := srv.IssueRefreshToken()
	writeFile(t, c.RefreshTokenFile, `{"refresh_token": "`+rt+`"}`)
	s := NewSource(c, nil, quiet())
	ctx := context.Background()
	at, err := s.AccessToken(ctx)
	if err != nil || !srv.ValidAccessToken(at) {
		t.Fatalf("first token %q, %v", at, err)
	}
	if again, _ := s.AccessToken(ctx); again != at || srv.Requests("refresh_token") != 1 {
		t.Errorf("a valid token was not reused (%d refreshes)", srv.Requests("refresh_token"))
	}
	if srv.ValidRefreshToken(rt) {
		t.Fatal("the server did not rotate")
	}
	saved, err := LoadToken(c.RefreshTokenFile)
	if err != nil || !srv.ValidRefreshToken(saved.RefreshToken) {
		t.Fatalf("the rotated refresh token was not saved: %+v, %v", saved, err)
	}
	if fi, _ := os.Stat(c.RefreshTokenFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	// The server refused the token (revoked early): Invalidate, and the
	// next one comes from the rotated refresh token.
	s.Invalidate()
	at2, err := s.AccessToken(ctx)
	if err != nil || at2 == at || !srv.ValidAccessToken(at2) {
		t.Fatalf("after Invalidate: %q, %v", at2, err)
	}
}

// An access token near its expiry is replaced before it is used.
func TestExpiringTokenIsRefreshedEarly(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{ClientID: "alertd-app", ClientSecret: "app-s3cret", TTL: 90 * time.Second})
	c := custom(srv, t.TempDir())
	writeFile(t, c.RefreshTokenFile, `{"refresh_token": "`+srv.IssueRefreshToken()+`"}`)
	s := NewSource(c, nil, quiet())
	a, _ := s.AccessToken(context.Background())
	b, err := s.AccessToken(context.Background())
	if err != nil || a == b || srv.Requests("refresh_token") != 2 {
		t.Errorf("a token expiring within %s was reused: %d refreshes, err %v", early, srv.Requests("refresh_token"), err)
	}
}

// A revoked refresh token is an authentication failure that says what to
// run, and never shows a token; a new login's file is picked up without a
// restart.
func TestRevokedRefreshTokenSaysWhatToRun(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{ClientID: "alertd-app", ClientSecret: "app-s3cret"})
	c := custom(srv, t.TempDir())
	rt := srv.IssueRefreshToken()
	writeFile(t, c.RefreshTokenFile, `{"refresh_token": "`+rt+`"}`)
	s := NewSource(c, nil, quiet())
	if _, err := s.AccessToken(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.Revoke(rt)
	s.Invalidate()
	_, err := s.AccessToken(context.Background())
	var e *Error
	if !errors.As(err, &e) || !e.Auth || !strings.Contains(e.Hint(), "alertd oauth login") || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("revoked: %v (%+v)", err, e)
	}
	if strings.Contains(err.Error(), rt) || strings.Contains(err.Error(), "app-s3cret") {
		t.Errorf("the error shows a secret: %v", err)
	}
	time.Sleep(10 * time.Millisecond) // a new mtime
	writeFile(t, c.RefreshTokenFile, `{"refresh_token": "`+srv.IssueRefreshToken()+`"}`)
	if _, err := s.AccessToken(context.Background()); err != nil {
		t.Errorf("after a new login wrote the file: %v", err)
	}
}

func TestWrongClientSecret(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{ClientID: "alertd-app", ClientSecret: "app-s3cret"})
	c := custom(srv, t.TempDir())
	c.ClientSecret = config.NewSecret("wrong")
	writeFile(t, c.RefreshTokenFile, `{"refresh_token": "`+srv.IssueRefreshToken()+`"}`)
	_, err := NewSource(c, nil, quiet()).AccessToken(context.Background())
	var e *Error
	if !errors.As(err, &e) || !e.Auth || !strings.Contains(e.Hint(), "client_secret") {
		t.Fatalf("wrong secret: %v", err)
	}
}

func TestMissingTokenFile(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{ClientID: "alertd-app", ClientSecret: "app-s3cret"})
	c := custom(srv, t.TempDir())
	_, err := NewSource(c, nil, quiet()).AccessToken(context.Background())
	var e *Error
	if !errors.As(err, &e) || !e.Auth || !strings.Contains(e.Hint(), "alertd oauth login") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestClientCredentials(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{ClientID: "alertd-app", ClientSecret: "app-s3cret"})
	c := custom(srv, t.TempDir())
	c.Grant, c.RefreshTokenFile = "client_credentials", ""
	at, err := NewSource(c, nil, quiet()).AccessToken(context.Background())
	if err != nil || !srv.ValidAccessToken(at) || srv.Requests("client_credentials") != 1 {
		t.Fatalf("client credentials: %q, %v", at, err)
	}
}

// The device flow prints a URL and a code, polls through
// authorization_pending and slow_down, and writes the token file.
func TestDeviceLogin(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{ClientID: "alertd-app", Public: true, SlowDown: true})
	c := custom(srv, t.TempDir())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Login(context.Background(), c, nil, pw); pw.Close() }()
	sc := bufio.NewScanner(pr)
	sc.Scan()
	if line := sc.Text(); !strings.Contains(line, "/devicelogin") || !strings.Contains(line, "ABCD-EFGH") {
		t.Fatalf("first line %q: want the URL and the code", line)
	}
	go func() {
		for sc.Scan() {
		}
	}()
	time.Sleep(1500 * time.Millisecond) // a poll or two while pending
	srv.ApproveDevices()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	tok, err := LoadToken(c.RefreshTokenFile)
	if err != nil || !srv.ValidRefreshToken(tok.RefreshToken) {
		t.Fatalf("saved token %+v, %v", tok, err)
	}
}

// The loopback flow: the user opens the printed URL, signs in, and the
// provider sends the browser back to alertd on 127.0.0.1 with a code that
// is exchanged with its PKCE verifier.
func TestLoopbackLogin(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{ClientID: "alertd-app", ClientSecret: "app-s3cret"})
	c := custom(srv, t.TempDir())
	c.Flow = "loopback"
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Login(context.Background(), c, nil, pw); pw.Close() }()
	sc := bufio.NewScanner(pr)
	var authURL string
	for authURL == "" && sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, srv.AuthURL()) {
			authURL = l
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	resp, err := http.Get(authURL) // the browser: follows the redirect to alertd
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "signed in") {
		t.Errorf("browser page %q", body)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if tok, err := LoadToken(c.RefreshTokenFile); err != nil || !srv.ValidRefreshToken(tok.RefreshToken) {
		t.Fatalf("saved token %+v, %v", tok, err)
	}
}

func TestProviderDefaults(t *testing.T) {
	ms := &config.OAuth2{Provider: "microsoft", Tenant: "contoso.onmicrosoft.com", Grant: "refresh_token"}
	if e := Endpoint(ms); e.TokenURL != "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token" ||
		e.DeviceAuthURL != "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode" {
		t.Errorf("microsoft endpoint %+v", e)
	}
	if sc := Scopes(ms); strings.Join(sc, " ") != "https://outlook.office.com/SMTP.Send offline_access" {
		t.Errorf("microsoft scopes %v", sc)
	}
	ms.Grant = "client_credentials"
	if sc := Scopes(ms); strings.Join(sc, " ") != "https://outlook.office365.com/.default" {
		t.Errorf("microsoft app-only scopes %v", sc)
	}
	if sc := Scopes(&config.OAuth2{Provider: "google"}); strings.Join(sc, " ") != "https://mail.google.com/" {
		t.Errorf("google scopes %v", sc)
	}
}
