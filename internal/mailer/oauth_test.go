package mailer

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/oauth"
	"github.com/alertd/alertd/internal/oauth/oauthtest"
	"github.com/alertd/alertd/internal/smtptest"
)

// tokenSetup: a real token endpoint, a refresh token file, and a Source
// over them.
func tokenSetup(t *testing.T) (*oauthtest.Server, *oauth.Source, string) {
	t.Helper()
	ts := oauthtest.Start(t, oauthtest.Options{ClientID: "alertd-app", ClientSecret: "app-s3cret"})
	c := &config.OAuth2{Provider: "custom", TokenURL: ts.TokenURL(), ClientID: "alertd-app",
		ClientSecret: config.NewSecret("app-s3cret"), RefreshTokenFile: filepath.Join(t.TempDir(), "token.json"), Grant: "refresh_token"}
	rt := ts.IssueRefreshToken()
	if err := os.WriteFile(c.RefreshTokenFile, []byte(`{"refresh_token":"`+rt+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return ts, oauth.NewSource(c, nil, slog.New(slog.NewTextHandler(io.Discard, nil))), rt
}

func authCommands(s *smtptest.Server) []string {
	var out []string
	for _, c := range s.Commands() {
		if strings.HasPrefix(c, "AUTH ") {
			out = append(out, c)
		}
	}
	return out
}

// Microsoft 365 offers "AUTH LOGIN XOAUTH2": auto with a token picks
// XOAUTH2. A token the server stopped accepting before its expiry is
// refused with 535 5.7.3; alertd fetches a fresh one and logs in once more.
func TestXOAuth2MicrosoftStyleRefreshesOnRefusal(t *testing.T) {
	ts, src, _ := tokenSetup(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Mechanisms: []string{"LOGIN", XOAuth2}, MicrosoftStyle: true,
		Token: func(u, tok string) bool { return u == user && ts.ValidAccessToken(tok) }})
	tr, _ := transport(t, srv.Port, SMTPOptions{Username: user, Tokens: src, TLSConfig: trusted(srv)})
	if _, err := send(t, tr); err != nil {
		t.Fatal(err)
	}
	_ = tr.Close()
	ts.ExpireAll() // revoked early: the cached token is now refused
	if _, err := send(t, tr); err != nil {
		t.Fatalf("after the server stopped taking the token: %v", err)
	}
	if got := authCommands(srv); !slices.Equal(got, []string{"AUTH XOAUTH2 " + user, "AUTH XOAUTH2 " + user, "AUTH XOAUTH2 " + user}) {
		t.Errorf("logins %q: want XOAUTH2, then a refused one and its retry", got)
	}
	if n := ts.Requests("refresh_token"); n != 2 {
		t.Errorf("%d refreshes, want 2 (the first token, then after the refusal)", n)
	}
	if len(srv.Messages()) != 2 {
		t.Errorf("%d mails arrived, want 2", len(srv.Messages()))
	}
}

// Gmail's way: a refused token gets a base64 JSON challenge, answered as
// each mechanism requires, then 535; the error says why in plain words,
// and shows neither the token nor the secret.
func TestTokenRefusalIsExplained(t *testing.T) {
	for _, c := range []struct{ auth, mech, status string }{
		{"xoauth2", XOAuth2, "status 401"},
		{"oauthbearer", OAuthBearer, "status invalid_token"},
	} {
		t.Run(c.mech, func(t *testing.T) {
			_, src, rt := tokenSetup(t)
			var seen []string
			srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.ImplicitTLS, Mechanisms: []string{XOAuth2, OAuthBearer},
				Token: func(_, tok string) bool { seen = append(seen, tok); return false }})
			tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityTLS, Auth: c.auth, Username: user, Tokens: src, TLSConfig: trusted(srv)})
			_, err := send(t, tr)
			var me *Error
			if !errors.As(err, &me) || me.Kind != KindAuth || me.Code != 535 || !strings.Contains(me.Hint, c.status) ||
				!strings.Contains(me.Hint, "not accepted") {
				t.Fatalf("refused token: %v", err)
			}
			if got := authCommands(srv); len(got) != 2 || got[0] != "AUTH "+c.mech+" "+user {
				t.Errorf("logins %q: want two %s (the second with a fresh token)", got, c.mech)
			}
			for _, secret := range append(seen, rt, "app-s3cret") {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error shows a secret: %v", err)
				}
			}
		})
	}
}

// A revoked refresh token is an authentication failure (the mail stays
// queued) that says what to run.
func TestRevokedRefreshTokenKeepsMailQueued(t *testing.T) {
	ts, src, rt := tokenSetup(t)
	ts.Revoke(rt)
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Mechanisms: []string{XOAuth2},
		Token: func(string, string) bool { return true }})
	tr, _ := transport(t, srv.Port, SMTPOptions{Auth: "xoauth2", Username: user, Tokens: src, TLSConfig: trusted(srv)})
	_, err := send(t, tr)
	var me *Error
	if !errors.As(err, &me) || me.Kind != KindAuth || me.Step != "oauth2" || !me.Retryable() || !strings.Contains(me.Hint, "alertd oauth login") {
		t.Fatalf("revoked: %v", err)
	}
}

// A server that takes no token login says so, with the fix.
func TestNoTokenMechanismOffered(t *testing.T) {
	_, src, _ := tokenSetup(t)
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: users})
	tr, _ := transport(t, srv.Port, SMTPOptions{Username: user, Tokens: src, TLSConfig: trusted(srv)})
	_, err := send(t, tr)
	var me *Error
	if !errors.As(err, &me) || me.Kind != KindConfig || !strings.Contains(me.Error(), "no token login") {
		t.Fatalf("no XOAUTH2 offered: %v", err)
	}
}

// Microsoft 365 with basic authentication turned off: the hint says to
// move to OAuth2.
func TestBasicAuthDisabledHint(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: users})
	srv.Fail("AUTH", -1, 535, [3]int{5, 7, 139}, "Authentication unsuccessful, basic authentication is disabled.")
	tr, _ := transport(t, srv.Port, login(srv, SMTPOptions{}))
	_, err := send(t, tr)
	if err == nil || !strings.Contains(err.Error(), "smtp.auth: xoauth2") {
		t.Fatalf("basic auth off: %v", err)
	}
}

// A server that offers DSN is asked for a bounce on failure or delay only,
// with the headers, naming the outbox entry; one that does not is asked
// nothing it would refuse.
func TestDSNWhenOffered(t *testing.T) {
	for _, dsn := range []bool{true, false} {
		srv := smtptest.Start(t, smtptest.Options{DSN: dsn})
		tr, _ := transport(t, srv.Port, SMTPOptions{Security: SecurityNone})
		if _, err := tr.Send(t.Context(), Envelope{From: user, To: []string{"ops@example.org"}, ID: "alertd-42"}, message(t, "ops@example.org")); err != nil {
			t.Fatal(err)
		}
		var mailCmd, rcptCmd string
		for _, c := range srv.Commands() {
			if strings.HasPrefix(c, "MAIL") {
				mailCmd = c
			}
			if strings.HasPrefix(c, "RCPT") {
				rcptCmd = c
			}
		}
		if dsn && (mailCmd != "MAIL <"+user+"> RET=HDRS ENVID=alertd-42" || rcptCmd != "RCPT <ops@example.org> NOTIFY=FAILURE,DELAY") {
			t.Errorf("with DSN: %q, %q", mailCmd, rcptCmd)
		}
		if !dsn && len(srv.Messages()) != 1 {
			t.Errorf("without DSN the mail did not go")
		}
	}
}
