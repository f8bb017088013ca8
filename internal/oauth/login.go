package oauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"time"

	"golang.org/x/oauth2"

	"github.com/alertd/alertd/internal/config"
)

// Login obtains a first refresh token with c's flow and writes it to
// c.RefreshTokenFile. It tells the user what to do on w. The device flow
// prints a URL and a code to enter on any machine with a browser (a
// headless Pi over SSH works); the loopback flow prints a URL to open on
// this machine and listens on 127.0.0.1 for the provider's redirect.
func Login(ctx context.Context, c *config.OAuth2, client *http.Client, w io.Writer) error {
	if c.Grant == "client_credentials" {
		return errors.New("grant: client_credentials needs no login: alertd gets its tokens with the client secret")
	}
	ctx = withClient(ctx, client)
	var tok *oauth2.Token
	var err error
	if c.Flow == "loopback" {
		tok, err = loopback(ctx, c, w)
	} else {
		tok, err = device(ctx, c, w)
	}
	if err != nil {
		return err
	}
	if tok.RefreshToken == "" {
		hint := "ask for offline access in smtp.oauth2.scopes"
		if c.Provider == "microsoft" {
			hint = "add offline_access to smtp.oauth2.scopes (it is in the defaults)"
		}
		return fmt.Errorf("the provider returned no refresh token: %s", hint)
	}
	if err := SaveToken(c.RefreshTokenFile, tok); err != nil {
		return err
	}
	fmt.Fprintf(w, "Signed in. Wrote %s (mode 0600). A running alertd picks it up at its next login; no restart needed.\n", c.RefreshTokenFile)
	return nil
}

func device(ctx context.Context, c *config.OAuth2, w io.Writer) (*oauth2.Token, error) {
	oc := oauthConfig(c)
	if oc.Endpoint.DeviceAuthURL == "" {
		return nil, errors.New("smtp.oauth2.device_auth_url is required for flow: device with provider: custom")
	}
	da, err := oc.DeviceAuth(ctx)
	if err != nil {
		return nil, explain(err, c, "start the device login")
	}
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(w, "To sign in, open %s\n(or open %s and enter the code %s)\n", da.VerificationURIComplete, da.VerificationURI, da.UserCode)
	} else {
		fmt.Fprintf(w, "To sign in, open %s on any device and enter the code %s\n", da.VerificationURI, da.UserCode)
	}
	fmt.Fprintln(w, "Sign in as the mailbox alertd sends from. Waiting...")
	tok, err := oc.DeviceAccessToken(ctx, da)
	if err != nil {
		return nil, explain(err, c, "finish the device login")
	}
	return tok, nil
}

// loginTimeout bounds the wait for the browser in the loopback flow.
const loginTimeout = 5 * time.Minute

func loopback(ctx context.Context, c *config.OAuth2, w io.Writer) (*oauth2.Token, error) {
	oc := oauthConfig(c)
	if oc.Endpoint.AuthURL == "" {
		return nil, errors.New("smtp.oauth2.auth_url is required for flow: loopback with provider: custom")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the sign-in redirect: %w", err)
	}
	defer ln.Close()
	oc.RedirectURL = "http://" + ln.Addr().String() + "/"
	state := randomHex()
	verifier := oauth2.GenerateVerifier()
	authURL := oc.AuthCodeURL(state, oauth2.AccessTypeOffline, oauth2.SetAuthURLParam("prompt", "consent"),
		oauth2.S256ChallengeOption(verifier))
	fmt.Fprintf(w, "To sign in, open this URL in a browser on this machine:\n\n  %s\n\n", authURL)
	fmt.Fprintf(w, "(On a headless machine, forward the port first: ssh -L %d:127.0.0.1:%d pi@host, then open it on yours.)\nWaiting...\n",
		ln.Addr().(*net.TCPAddr).Port, ln.Addr().(*net.TCPAddr).Port)

	type result struct {
		code string
		err  error
	}
	got := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var res result
		switch {
		case q.Get("state") != state:
			http.Error(rw, "alertd: this sign-in answer is not for this login (state mismatch)", http.StatusBadRequest)
			return // not ours: keep waiting
		case q.Get("error") != "":
			res.err = fmt.Errorf("the provider refused the sign-in: %s %s", q.Get("error"), firstLine(q.Get("error_description")))
		case q.Get("code") == "":
			res.err = errors.New("the provider's redirect carried no code")
		default:
			res.code = q.Get("code")
		}
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		if res.err != nil {
			fmt.Fprintf(rw, "<p>alertd: sign-in failed: %s</p>", html.EscapeString(res.err.Error()))
		} else {
			fmt.Fprint(rw, "<p>alertd: signed in. You can close this page.</p>")
		}
		if f, ok := rw.(http.Flusher); ok {
			f.Flush() // the page reaches the browser before the server goes
		}
		select {
		case got <- res:
		default:
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		// Let the answer to the browser finish rather than cut it (it
		// saw an empty reply when the exchange was quick).
		sctx, stop := context.WithTimeout(context.Background(), 2*time.Second)
		defer stop()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	var res result
	select {
	case res = <-got:
	case <-ctx.Done():
		return nil, fmt.Errorf("no sign-in within %s", loginTimeout)
	}
	if res.err != nil {
		return nil, res.err
	}
	tok, err := oc.Exchange(ctx, res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, explain(err, c, "exchange the sign-in code")
	}
	return tok, nil
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
