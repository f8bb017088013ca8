// Package oauthtest runs a real OAuth 2.0 authorization server for tests,
// in process over loopback HTTP: the token endpoint (RFC 6749: the
// refresh_token, client_credentials and authorization_code grants, the
// last with PKCE, RFC 7636), the device authorization endpoint and its
// polling (RFC 8628: authorization_pending, slow_down), and an
// authorization endpoint that approves at once and redirects, as a browser
// would be sent back after signing in. It issues random tokens, rotates
// refresh tokens when asked, expires access tokens, and revokes.
package oauthtest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Options configure a Server.
type Options struct {
	ClientID, ClientSecret string
	// Rotate issues a new refresh token at every refresh (Microsoft does
	// at will); the old one stops working.
	Rotate bool
	// TTL is each access token's lifetime (default 1 h).
	TTL time.Duration
	// SlowDown answers the first device-code poll with slow_down (the
	// client must then wait 5 s more between polls).
	SlowDown bool
	// Public: a public client (no secret), as device-code apps are.
	Public bool
}

// Server is a running authorization server.
type Server struct {
	URL string // http://127.0.0.1:PORT

	opts Options
	srv  *http.Server

	mu       sync.Mutex
	access   map[string]time.Time // access token → expiry
	refresh  map[string]bool      // refresh token → valid
	codes    map[string]codeGrant // authorization code → its PKCE challenge
	devices  map[string]*device   // device_code → state
	requests map[string]int       // grant_type → requests
}

type codeGrant struct{ challenge, redirect string }

type device struct {
	approved bool
	polled   int
}

// Start listens on 127.0.0.1:0; the server stops when the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.TTL == 0 {
		o.TTL = time.Hour
	}
	s := &Server{opts: o, access: map[string]time.Time{}, refresh: map[string]bool{}, codes: map[string]codeGrant{},
		devices: map[string]*device{}, requests: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.URL = "http://" + ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", s.token)
	mux.HandleFunc("POST /devicecode", s.deviceCode)
	mux.HandleFunc("GET /authorize", s.authorize)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

// TokenURL, DeviceAuthURL and AuthURL are the endpoints.
func (s *Server) TokenURL() string      { return s.URL + "/token" }
func (s *Server) DeviceAuthURL() string { return s.URL + "/devicecode" }
func (s *Server) AuthURL() string       { return s.URL + "/authorize" }

// IssueRefreshToken returns a valid refresh token, as a past login would
// have left.
func (s *Server) IssueRefreshToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := random("rt")
	s.refresh[rt] = true
	return rt
}

// Revoke invalidates a refresh token (a password change, an admin's
// revocation); its next use gets invalid_grant.
func (s *Server) Revoke(rt string) {
	s.mu.Lock()
	delete(s.refresh, rt)
	s.mu.Unlock()
}

// ValidAccessToken reports whether tok is a current access token: the
// SMTP server's check.
func (s *Server) ValidAccessToken(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.access[tok]
	return ok && time.Now().Before(exp)
}

// ExpireAll makes every access token issued so far invalid.
func (s *Server) ExpireAll() {
	s.mu.Lock()
	clear(s.access)
	s.mu.Unlock()
}

// ApproveDevices signs in every pending device code, as the user would in
// a browser on another machine.
func (s *Server) ApproveDevices() {
	s.mu.Lock()
	for _, d := range s.devices {
		d.approved = true
	}
	s.mu.Unlock()
}

// Requests is how many token requests of grant_type were answered.
func (s *Server) Requests(grant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[grant]
}

// ValidRefreshToken reports whether rt may still be used.
func (s *Server) ValidRefreshToken(rt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refresh[rt]
}

func random(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

func fail(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// client checks the client's credentials: HTTP Basic or form fields.
func (s *Server) client(r *http.Request) bool {
	id, secret, basic := r.BasicAuth()
	if basic {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != s.opts.ClientID {
		return false
	}
	return s.opts.Public || secret == s.opts.ClientSecret
}

func (s *Server) issue(w http.ResponseWriter, withRefresh string) {
	at := random("at")
	s.access[at] = time.Now().Add(s.opts.TTL)
	resp := map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": int(s.opts.TTL.Seconds())}
	if withRefresh != "" {
		resp["refresh_token"] = withRefresh
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		fail(w, 400, "invalid_request", "bad form")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	grant := r.PostForm.Get("grant_type")
	s.requests[grant]++
	if !s.client(r) {
		// x/oauth2 tries Basic first, then the form: say so with 401.
		fail(w, 401, "invalid_client", "client authentication failed")
		return
	}
	switch grant {
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		if !s.refresh[rt] {
			fail(w, 400, "invalid_grant", "AADSTS70008: The refresh token has expired or been revoked.")
			return
		}
		next := ""
		if s.opts.Rotate {
			delete(s.refresh, rt)
			next = random("rt")
			s.refresh[next] = true
		}
		s.issue(w, next)
	case "client_credentials":
		s.issue(w, "")
	case "authorization_code":
		c, ok := s.codes[r.PostForm.Get("code")]
		delete(s.codes, r.PostForm.Get("code"))
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if !ok || c.redirect != r.PostForm.Get("redirect_uri") || base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
			fail(w, 400, "invalid_grant", "code, redirect_uri or code_verifier wrong")
			return
		}
		rt := random("rt")
		s.refresh[rt] = true
		s.issue(w, rt)
	case "urn:ietf:params:oauth:grant-type:device_code":
		d := s.devices[r.PostForm.Get("device_code")]
		switch {
		case d == nil:
			fail(w, 400, "expired_token", "unknown device code")
			return
		case s.opts.SlowDown && d.polled < 2: // x/oauth2 may ask twice per poll (Basic, then the form)
			d.polled++
			fail(w, 400, "slow_down", "polling too fast")
			return
		case !d.approved:
			d.polled++
			fail(w, 400, "authorization_pending", "the user has not signed in yet")
			return
		}
		delete(s.devices, r.PostForm.Get("device_code"))
		rt := random("rt")
		s.refresh[rt] = true
		s.issue(w, rt)
	default:
		fail(w, 400, "unsupported_grant_type", grant)
	}
}

func (s *Server) deviceCode(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("client_id") != s.opts.ClientID {
		fail(w, 400, "invalid_client", "unknown client_id")
		return
	}
	s.mu.Lock()
	dc := random("dc")
	s.devices[dc] = &device{}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"device_code": dc, "user_code": "ABCD-EFGH", "verification_uri": s.URL + "/devicelogin",
		"expires_in": 900, "interval": 1,
	})
}

// authorize approves at once and sends the browser back to redirect_uri.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || q.Get("client_id") != s.opts.ClientID || q.Get("response_type") != "code" ||
		q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		http.Error(w, "bad authorization request", 400)
		return
	}
	code := random("code")
	s.mu.Lock()
	s.codes[code] = codeGrant{challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri")}
	s.mu.Unlock()
	v := redirect.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	redirect.RawQuery = v.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}
