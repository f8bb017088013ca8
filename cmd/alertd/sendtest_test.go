package main

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/smtptest"
)

const mailUser = "alerts@example.org"

// smtpFile writes a configuration that sends through 127.0.0.1:port with
// the given security, trusting caFile when set; the password comes from
// SMTP_PASSWORD.
func smtpFile(t *testing.T, port int, security, caFile string) string {
	t.Helper()
	tlsLine := ""
	if caFile != "" {
		tlsLine = "  tls: {ca_file: " + caFile + "}\n"
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(`smtp:
  host: 127.0.0.1
  port: %d
  security: %s
  username: %s
  password: ${SMTP_PASSWORD}
  from: "Alertas <%s>"
  timeout: 1s
%sstore: {path: alertd.db}
http: {listen: "off"}
defaults: {to: [ops@example.org]}
`, port, security, mailUser, mailUser, tlsLine)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// lastLine is the verdict send-test ends with.
func lastLine(s string) string {
	l := lines(s)
	if len(l) == 0 {
		return ""
	}
	return l[len(l)-1]
}

// noSecret fails the test when the password shows in any form a
// transcript could carry it.
func noSecret(t *testing.T, r result) {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString
	for _, s := range []string{smtpPassword, b64([]byte(smtpPassword)), b64([]byte("\x00" + mailUser + "\x00" + smtpPassword))} {
		if strings.Contains(r.stdout+r.stderr, s) {
			t.Errorf("send-test printed the password (as %q):\n%s", s, r.stdout)
		}
	}
}

func TestSendTestDeliversAndShowsTheSession(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{mailUser: smtpPassword}})
	r := alertd(t, []string{"SMTP_PASSWORD=" + smtpPassword}, "send-test", "-config", smtpFile(t, srv.Port, "starttls", srv.CAFile), "-to", "Me <me@example.org>")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"\nC: STARTTLS\n", "\nS: 220 2.0.0 Ready to start TLS\n",
		"\nTLS: TLS 1.3, certificate verified: subject CN=smtptest",
		"\nC: AUTH PLAIN <redacted>\n", "\nS: 235 ", "\nC: RCPT TO:<me@example.org>\n", "\nC: QUIT\n", "\nS: 221 ",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	if got := lastLine(r.stdout); !strings.HasPrefix(got, "OK: 127.0.0.1:") || !strings.Contains(got, "accepted the test mail for me@example.org (250)") {
		t.Errorf("last line %q", got)
	}
	noSecret(t, r)
	m := srv.WaitMessages(t, 1, 5*time.Second)[0]
	if m.Subject != "alertd test mail" || len(m.To) != 1 || m.To[0] != "me@example.org" || m.AuthUser != mailUser {
		t.Errorf("the server got %q for %v as %q", m.Subject, m.To, m.AuthUser)
	}
}

// TestSendTestSaysWhatToChange: each classic mistake fails with exit 1,
// the server's own words in the transcript where it answered, and a last
// line naming the setting to change. Nothing is delivered and the password
// never shows.
func TestSendTestSaysWhatToChange(t *testing.T) {
	starttls := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{mailUser: "the-real-password"}})
	implicit := smtptest.Start(t, smtptest.Options{TLS: smtptest.ImplicitTLS})
	closed := closedPort(t)
	for _, tc := range []struct {
		name       string
		config     string
		transcript string // in stdout before the last line ("" : nothing required)
		last       []string
	}{
		{"wrong password", smtpFile(t, starttls.Port, "starttls", starttls.CAFile), "\nS: 535 5.7.8 ",
			[]string{"FAILED: 127.0.0.1:", "refused the login (it replied 535 5.7.8", "check smtp.username and smtp.password"}},
		{"nothing listening", smtpFile(t, closed, "starttls", ""), "",
			[]string{"FAILED: could not connect", "connection refused", fmt.Sprintf("nothing listens on port %d of 127.0.0.1", closed)}},
		{"a TLS port with starttls", smtpFile(t, implicit.Port, "starttls", implicit.CAFile), "",
			[]string{"FAILED:", fmt.Sprintf("if port %d is an implicit-TLS port (465), set security: tls", implicit.Port)}},
		{"a STARTTLS port with tls", smtpFile(t, starttls.Port, "tls", starttls.CAFile), "",
			[]string{"FAILED: could not set up a protected session", fmt.Sprintf("port %d does not start with TLS; it expects security: starttls", starttls.Port)}},
		{"untrusted certificate", smtpFile(t, starttls.Port, "starttls", ""), "\nS: 220 2.0.0 Ready to start TLS\n",
			[]string{"FAILED: could not set up a protected session", "certificate signed by unknown authority",
				"the server's certificate is not trusted; for a private CA set smtp.tls.ca_file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := alertd(t, []string{"SMTP_PASSWORD=" + smtpPassword}, "send-test", "-config", tc.config)
			if r.code != 1 {
				t.Errorf("exit %d, want 1", r.code)
			}
			got := lastLine(r.stdout)
			for _, want := range tc.last {
				if !strings.Contains(got, want) {
					t.Errorf("last line lacks %q:\n%s", want, got)
				}
			}
			if tc.transcript != "" && !strings.Contains(r.stdout, tc.transcript) {
				t.Errorf("transcript lacks %q:\n%s", tc.transcript, r.stdout)
			}
			if strings.Contains(r.stdout, "MAIL FROM") {
				t.Errorf("a mail was attempted:\n%s", r.stdout)
			}
			noSecret(t, r)
		})
	}
	if n := len(starttls.Messages()) + len(implicit.Messages()); n != 0 {
		t.Errorf("%d mails delivered", n)
	}
}

// TestSendTestRefusedRecipient: the server refuses the one recipient:
// exit 1 and the last line names it with the server's words.
func TestSendTestRefusedRecipient(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: map[string]string{mailUser: smtpPassword}})
	srv.FailRcpt("nobody@example.org", -1, 550, [3]int{5, 1, 1}, "No such user")
	r := alertd(t, []string{"SMTP_PASSWORD=" + smtpPassword}, "send-test", "-config", smtpFile(t, srv.Port, "starttls", srv.CAFile), "-to", "nobody@example.org")
	want := fmt.Sprintf("FAILED: 127.0.0.1:%d refused every recipient: nobody@example.org (550 No such user)", srv.Port)
	if r.code != 1 || lastLine(r.stdout) != want || !strings.Contains(r.stdout, "\nS: 550 5.1.1 No such user\n") {
		t.Errorf("exit %d, last line %q, want exit 1 and %q\n%s", r.code, lastLine(r.stdout), want, r.stdout)
	}
}

func TestSendTestWithoutSMTPWritesTheSpool(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(config, []byte("store: {path: alertd.db}\ndefaults: {to: [ops@example.org]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := alertd(t, nil, "send-test", "-config", config)
	got := lastLine(r.stdout)
	spool := filepath.Join(dir, "spool") + string(filepath.Separator)
	if r.code != 0 || !strings.HasPrefix(got, "OK: no smtp section, so the test mail was written to "+spool) {
		t.Fatalf("exit %d, last line %q\nstderr: %s", r.code, got, r.stderr)
	}
	path := strings.TrimSuffix(strings.TrimPrefix(got, "OK: no smtp section, so the test mail was written to "), "; configure smtp to send mail for real")
	data, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(data), "Subject: alertd test mail") || !strings.Contains(string(data), "To: <ops@example.org>") {
		t.Errorf("the file it names: %v\n%s", err, data)
	}
}

func TestSendTestConfigErrorExits2(t *testing.T) {
	r := alertd(t, []string{"SMTP_PASSWORD=" + smtpPassword}, "send-test", "-config", "testdata/bad.yaml")
	if r.code != 2 || !strings.HasPrefix(r.stderr, "testdata/bad.yaml:14:3: ") || r.stdout != "" {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}
