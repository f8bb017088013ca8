package smtpin

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Independent clients: Debian's Python smtplib (package python3) and
// swaks (package swaks). scripts/test.sh installs them; a machine without
// them fails here with the package to install rather than skip, so CI
// cannot pass without the real peers.

// python is Debian's interpreter (a python3 earlier on PATH may be
// another installation).
const python = "/usr/bin/python3"

func needTool(t *testing.T, path, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err != nil {
		t.Fatalf("%s not found: install Debian's %s package (scripts/test.sh does)", path, pkg)
	}
	return p
}

// pyResult is testdata/smtpclient.py's answer.
type pyResult struct {
	OK      bool                      `json:"ok"`
	Error   string                    `json:"error"`
	Code    int                       `json:"code"`
	Text    string                    `json:"text"`
	Refused map[string][2]interface{} `json:"refused"`
}

// smtplib sends one mail with Python's smtplib; args are the script's
// keys (see testdata/smtpclient.py), port filled in.
func smtplib(t *testing.T, e *env, args map[string]any) pyResult {
	t.Helper()
	py := needTool(t, python, "python3")
	_, port, _ := net.SplitHostPort(e.addr)
	args["port"] = port
	b, _ := json.Marshal(args)
	cmd := exec.Command(py, "testdata/smtpclient.py")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("smtpclient.py: %v\n%s", err, out)
	}
	var r pyResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("smtpclient.py said %q: %v", out, err)
	}
	return r
}

func TestPythonSmtplibRelaysAndComposesTheEvent(t *testing.T) {
	e := start(t, Options{Users: Users{"pi": "hunter2"}})
	r := smtplib(t, e, map[string]any{
		"user": "pi", "password": "hunter2", "mech": "PLAIN",
		"from": "pi@casa.lan", "to": []string{"ops@example.org", "nobody@gmail.com"},
		"compose": map[string]any{"from": "Raspberry Pi <pi@casa.lan>", "subject": "Temperatura alta en el salón",
			"text": "31,5 °C", "html": "<p>31,5 &deg;C</p>"},
	})
	if !r.OK || len(r.Refused) != 1 || r.Refused["nobody@gmail.com"][0] != 550.0 {
		t.Fatalf("smtplib: %+v", r)
	}
	m := e.sink.only(t)
	if m.Subject != "Temperatura alta en el salón" || m.Text != "31,5 °C" || m.Event.Topic != "smtp/pi" {
		t.Errorf("subject %q text %q topic %q", m.Subject, m.Text, m.Event.Topic)
	}
	h := headerOf(t, m.Relayed)
	if h.Get("Reply-To") != "Raspberry Pi <pi@casa.lan>" || h.Get("From") != `"Raspberry Pi via alertd" <alertd@example.org>` {
		t.Errorf("Reply-To %q From %q", h.Get("Reply-To"), h.Get("From"))
	}
	if !strings.Contains(string(m.Relayed), " with ESMTPA id ") {
		t.Errorf("Received does not say ESMTPA:\n%s", m.Relayed)
	}
}

func TestPythonSmtplibLogin(t *testing.T) {
	e := start(t, Options{Users: Users{"arduino": "s3cret"}})
	for _, ir := range []bool{true, false} {
		r := smtplib(t, e, map[string]any{"user": "arduino", "password": "s3cret", "mech": "LOGIN", "initial_response": ir,
			"from": "a@casa.lan", "to": []string{"ops@example.org"}, "raw_b64": b64("Subject: login\r\n\r\nok\r\n")})
		if !r.OK {
			t.Errorf("LOGIN (initial response %v): %+v", ir, r)
		}
	}
	r := smtplib(t, e, map[string]any{"user": "arduino", "password": "wrong", "mech": "LOGIN",
		"from": "a@casa.lan", "to": []string{"ops@example.org"}, "raw_b64": b64("x")})
	if r.Error != "SMTPAuthenticationError" || r.Code != 535 {
		t.Errorf("wrong password: %+v", r)
	}
	if n := len(e.sink.Mails()); n != 2 {
		t.Errorf("the Sink got %d mails, want 2", n)
	}
}

func TestPythonSmtplibTooBig(t *testing.T) {
	e := start(t, Options{})
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("y", 76)+"\r\n", 10<<20/78)
	r := smtplib(t, e, map[string]any{"from": "a@casa.lan", "to": []string{"ops@example.org"}, "raw_b64": b64(big)})
	// smtplib declares SIZE at MAIL, which go-smtp refuses itself.
	if r.Error != "SMTPSenderRefused" || r.Code != 552 || !strings.HasPrefix(r.Text, "5.3.4") {
		t.Errorf("10 MB: %+v", r)
	}
	if e.counts.get(TooBig) != 1 {
		t.Errorf("too_big counted %d", e.counts.get(TooBig))
	}
	r = smtplib(t, e, map[string]any{"from": "a@casa.lan", "to": []string{"ops@example.org"}, "raw_b64": b64("Subject: s\r\n\r\nx\r\n")})
	if !r.OK {
		t.Errorf("a small mail after: %+v", r)
	}
}

func TestPythonSmtplibFromOutsideNetworks(t *testing.T) {
	e := start(t, Options{Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	r := smtplib(t, e, map[string]any{"source": "127.0.0.2", "from": "a@casa.lan", "to": []string{"ops@example.org"}, "raw_b64": b64("x")})
	if r.Error != "SMTPConnectError" || r.Code != 554 {
		t.Errorf("from 127.0.0.2: %+v", r)
	}
	if len(e.sink.Mails()) != 0 {
		t.Error("the Sink got a mail")
	}
}

func TestPythonSmtplibStartTLS(t *testing.T) {
	e := start(t, Options{Users: Users{"pi": "hunter2"}, TLS: testTLS(t)})
	r := smtplib(t, e, map[string]any{"starttls": true, "user": "pi", "password": "hunter2",
		"from": "pi@casa.lan", "to": []string{"ops@example.org"}, "raw_b64": b64("Subject: over TLS\r\n\r\nok\r\n")})
	if !r.OK {
		t.Fatalf("STARTTLS: %+v", r)
	}
	m := e.sink.only(t)
	if !strings.Contains(string(m.Relayed), " with ESMTPSA id ") {
		t.Errorf("Received does not say ESMTPSA:\n%s", m.Relayed)
	}
}

func TestSwaks(t *testing.T) {
	sw := needTool(t, "swaks", "swaks")
	e := start(t, Options{Users: Users{"arduino": "s3cret"}})
	run := func(args ...string) string {
		t.Helper()
		base := []string{"--server", e.addr, "--from", "arduino@casa.lan", "--helo", "arduino-uno",
			"--auth-user", "arduino", "--auth-password", "s3cret", "--timeout", "10"}
		out, _ := exec.Command(sw, append(base, args...)...).CombinedOutput()
		return string(out)
	}
	for _, mech := range []string{"LOGIN", "PLAIN"} {
		out := run("--to", "ops@example.org", "--auth", mech, "--header", "Subject: swaks "+mech, "--body", "from swaks")
		if !strings.Contains(out, "<-  250 2.0.0 OK: queued as ") {
			t.Errorf("swaks AUTH %s:\n%s", mech, out)
		}
		if mech == "LOGIN" && !strings.Contains(out, "<-  334 VXNlcm5hbWU6") {
			t.Errorf("swaks AUTH LOGIN saw no Username: prompt:\n%s", out)
		}
	}
	out := run("--to", "victim@gmail.com", "--auth", "LOGIN")
	if !strings.Contains(out, "<** 550 5.7.1 relaying denied") {
		t.Errorf("swaks to a stranger:\n%s", out)
	}
	ms := e.sink.Mails()
	if len(ms) != 2 || ms[0].Subject != "swaks LOGIN" || ms[1].User != "arduino" || ms[1].Helo != "arduino-uno" {
		t.Errorf("the Sink got %d mails: %+v", len(ms), ms)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// testTLS is a throw-away certificate for 127.0.0.1.
func testTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: testHost},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}
