package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/oauth"
	"github.com/alertd/alertd/internal/oauth/oauthtest"
	"github.com/alertd/alertd/internal/smtptest"
)

// The whole OAuth2 path through the binary: `alertd oauth login` signs in
// by the device flow (and the loopback flow) against a real token
// endpoint and writes the token file; `alertd run` then logs in to a real
// SMTP server with XOAUTH2, refreshing the access token as it needs, and
// the alert arrives. No token or secret appears in what alertd prints.
//
// With several SMTP sessions (smtp.max_connections), they share one token
// source: the rotating refresh token is refreshed once, not once per
// session (a second refresh with the rotated-away token would be refused).
func TestOAuthLoginThenDeliverWithXOAuth2(t *testing.T) {
	for _, tc := range []struct {
		flow     string
		sessions int
	}{{"device", 1}, {"loopback", 1}, {"device", 3}} {
		flow := tc.flow
		t.Run(fmt.Sprintf("%s/%d sessions", flow, tc.sessions), func(t *testing.T) {
			ts := oauthtest.Start(t, oauthtest.Options{ClientID: "alertd-app", ClientSecret: "app-s3cret-value", Rotate: true})
			var tokens []string
			srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Mechanisms: []string{"LOGIN", smtptest.XOAuth2}, MicrosoftStyle: true,
				Token: func(u, tok string) bool {
					tokens = append(tokens, tok)
					return u == "alerts@contoso.example" && ts.ValidAccessToken(tok)
				}})
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "ca.pem"), caPEM(t, srv), 0o600); err != nil {
				t.Fatal(err)
			}
			httpAddr := freePort(t)
			config := filepath.Join(dir, "alertd.yaml")
			writeConfig(t, config, fmt.Sprintf(`
mqtt: {listen: 127.0.0.1:0}
http: {listen: %s}
store: {path: alertd.db}
log: {level: debug}
smtp:
  host: 127.0.0.1
  port: %d
  security: starttls
  tls: {ca_file: ca.pem}
  from: "Alerts <alerts@contoso.example>"
  max_connections: %d
  auth: xoauth2
  username: alerts@contoso.example
  oauth2:
    provider: custom
    token_url: %s
    device_auth_url: %s
    auth_url: %s
    client_id: alertd-app
    client_secret: "${SECRET}"
    refresh_token_file: token.json
    flow: %s
defaults: {to: [ops@example.org]}
rules:
  - {name: hot, topic: "sensors/+/t", field: temp, above: 30}
`, httpAddr, srv.Port, tc.sessions, ts.TokenURL(), ts.DeviceAuthURL(), ts.AuthURL(), flow))
			env := []string{"SECRET=app-s3cret-value"}

			login := exec.Command(binary, "oauth", "login", "-config", config)
			login.Env = append(os.Environ(), env...)
			out, _ := login.StdoutPipe()
			var loginErr syncBuffer
			login.Stderr = &loginErr
			if err := login.Start(); err != nil {
				t.Fatal(err)
			}
			var printed strings.Builder
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				line := sc.Text()
				printed.WriteString(line + "\n")
				if flow == "device" && strings.Contains(line, "ABCD-EFGH") {
					ts.ApproveDevices() // the user signs in on their phone
				}
				if u := strings.TrimSpace(line); flow == "loopback" && strings.HasPrefix(u, ts.AuthURL()) {
					go func() { // the browser
						if resp, err := http.Get(u); err == nil {
							resp.Body.Close()
						}
					}()
				}
			}
			if err := login.Wait(); err != nil {
				t.Fatalf("oauth login: %v\n%s%s", err, printed.String(), loginErr.String())
			}
			tokFile := filepath.Join(dir, "token.json")
			tok, err := oauth.LoadToken(tokFile)
			if err != nil || !ts.ValidRefreshToken(tok.RefreshToken) {
				t.Fatalf("token file after login: %+v, %v\n%s", tok, err, printed.String())
			}
			if fi, _ := os.Stat(tokFile); fi.Mode().Perm() != 0o600 {
				t.Errorf("token file mode %v", fi.Mode().Perm())
			}

			refreshesBefore := ts.Requests("refresh_token")
			var stderr syncBuffer
			cmd := exec.Command(binary, "run", "-config", config)
			cmd.Env = append(os.Environ(), env...)
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer func() {
				if cmd.ProcessState == nil {
					_ = cmd.Process.Signal(syscall.SIGTERM)
					<-exited
				}
			}()
			waitHealthy(t, "http://"+httpAddr+"/healthz", exited)
			m := brokerOf(&stderr)
			if m == nil {
				t.Fatal("no broker URL in the log")
			}
			for i := range tc.sessions {
				publish(t, m[1], fmt.Sprintf("sensors/%c/t", 'a'+i), `{"temp": 31}`)
			}
			msgs := srv.WaitMessages(t, tc.sessions, 15*time.Second)
			for _, msg := range msgs {
				if msg.AuthUser != "alerts@contoso.example" {
					t.Errorf("logged in as %q", msg.AuthUser)
				}
			}
			if n := ts.Requests("refresh_token") - refreshesBefore; n != 1 {
				t.Errorf("%d refreshes for %d sessions, want 1", n, tc.sessions)
			}
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited
			// The refresh rotated the refresh token: the file holds the new one.
			if now, err := oauth.LoadToken(tokFile); err != nil || now.RefreshToken == tok.RefreshToken || !ts.ValidRefreshToken(now.RefreshToken) {
				t.Errorf("rotated refresh token not saved: %v", err)
			}
			all := printed.String() + loginErr.String() + stderr.String()
			for _, secret := range append(tokens, tok.RefreshToken, "app-s3cret-value") {
				if strings.Contains(all, secret) {
					t.Errorf("alertd printed a secret (%.8s…)", secret)
				}
			}
		})
	}
}

func writeConfig(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func caPEM(t *testing.T, s *smtptest.Server) []byte {
	t.Helper()
	f, err := os.Open(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	return b
}
