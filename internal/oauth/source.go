package oauth

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/alertd/alertd/internal/config"
)

// early is how long before its expiry an access token is replaced: an
// SMTP session may take a while between getting the token and AUTH.
const early = 2 * time.Minute

// Source supplies access tokens. Safe for concurrent use.
type Source struct {
	cfg    *config.OAuth2
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	tok     *oauth2.Token // nil until the first use
	modTime time.Time     // of the refresh token file when read
}

// NewSource returns a Source for c. It reads nothing yet: a missing token
// file is reported at the first login, like any authentication problem,
// without stopping alertd. client is the HTTP client for the provider
// (nil: http.DefaultClient).
func NewSource(c *config.OAuth2, client *http.Client, log *slog.Logger) *Source {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	return &Source{cfg: c, client: client, log: log, now: time.Now}
}

// AccessToken returns a token valid for a while yet, refreshing it when
// needed.
func (s *Source) AccessToken(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && s.tok.AccessToken != "" && (s.tok.Expiry.IsZero() || s.now().Add(early).Before(s.tok.Expiry)) && !s.fileChanged() {
		return s.tok.AccessToken, nil
	}
	tok, err := s.fetch(withClient(ctx, s.client))
	if err != nil {
		return "", err
	}
	s.tok = tok
	return tok.AccessToken, nil
}

// Invalidate forgets the access token: the server refused it (revoked
// before its expiry, or for another scope). The next AccessToken fetches
// a new one.
func (s *Source) Invalidate() {
	s.mu.Lock()
	if s.tok != nil {
		s.tok.AccessToken = ""
	}
	s.mu.Unlock()
}

// fileChanged reports whether the refresh token file was rewritten by
// someone else since it was read (alertd oauth login). s.mu is held.
func (s *Source) fileChanged() bool {
	if s.cfg.Grant == "client_credentials" {
		return false
	}
	fi, err := os.Stat(s.cfg.RefreshTokenFile)
	return err == nil && !fi.ModTime().Equal(s.modTime)
}

func (s *Source) fetch(ctx context.Context) (*oauth2.Token, error) {
	if s.cfg.Grant == "client_credentials" {
		cc := clientcredentials.Config{ClientID: s.cfg.ClientID, ClientSecret: s.cfg.ClientSecret.Reveal(),
			TokenURL: Endpoint(s.cfg).TokenURL, Scopes: Scopes(s.cfg)}
		tok, err := cc.Token(ctx)
		if err != nil {
			return nil, explain(err, s.cfg, "get an access token (client credentials)")
		}
		return tok, nil
	}
	if s.tok == nil || s.fileChanged() {
		if err := s.load(); err != nil {
			return nil, err
		}
	}
	old := s.tok.RefreshToken
	// An empty access token makes the token source refresh at once.
	tok, err := oauthConfig(s.cfg).TokenSource(ctx, &oauth2.Token{RefreshToken: old}).Token()
	if err != nil {
		return nil, explain(err, s.cfg, "refresh the access token")
	}
	if tok.RefreshToken != old {
		// The provider rotated it: the old one may stop working, so the
		// new one must be on disk before it is relied on.
		if err := SaveToken(s.cfg.RefreshTokenFile, tok); err != nil {
			s.log.Error("the provider rotated the refresh token and alertd could not save it: after a restart, run alertd oauth login",
				"file", s.cfg.RefreshTokenFile, "err", err)
		} else {
			s.log.Info("the provider rotated the refresh token; saved", "file", s.cfg.RefreshTokenFile)
		}
		if fi, err := os.Stat(s.cfg.RefreshTokenFile); err == nil {
			s.modTime = fi.ModTime()
		}
	}
	return tok, nil
}

// load reads the refresh token file. s.mu is held.
func (s *Source) load() error {
	fi, err := os.Stat(s.cfg.RefreshTokenFile)
	tok, lerr := LoadToken(s.cfg.RefreshTokenFile)
	if lerr != nil {
		return lerr
	}
	if err == nil {
		s.modTime = fi.ModTime()
	}
	if s.tok != nil && s.tok.RefreshToken != tok.RefreshToken {
		s.log.Info("read a new refresh token", "file", s.cfg.RefreshTokenFile)
	}
	s.tok = &oauth2.Token{RefreshToken: tok.RefreshToken}
	return nil
}
