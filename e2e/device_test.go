package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The devices of these tests: real SMTP clients (swaks, Python's smtplib,
// and a sketch speaking SMTP by hand) and an HTTP client, each from an
// address of its own on loopback (Linux routes all of 127.0.0.0/8 to lo),
// since alertd's ingress rate limit is per client address.

const deviceToken = "e2e-device-token"

// ingress is one setup's device listeners.
type ingress struct {
	smtp string // host:port of ingress.smtp.listen
	http string // base URL of ingress.http.listen
}

// ingressYAML is an ingress section with both listeners on free loopback
// ports; limits is extra YAML for the section (cooldown, rate_limit).
func ingressYAML(t *testing.T, limits string) (string, ingress) {
	t.Helper()
	smtpIn := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	httpIn := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	return fmt.Sprintf(`ingress:
  relay_to: [ops@example.org]
%s  smtp: {listen: %q, hostname: alertd.test}
  http: {listen: %q, tokens: [%q]}
`, limits, smtpIn, httpIn, deviceToken), ingress{smtp: smtpIn, http: "http://" + httpIn}
}

// smtpReply is the reply a device heard at the end of DATA (or at the
// step that refused it).
type smtpReply struct {
	Code int    `json:"code"`
	Text string `json:"text"`
}

func (r smtpReply) String() string { return fmt.Sprintf("%d %s", r.Code, r.Text) }

// pythonSend is a device's mail through Python's smtplib: EHLO, MAIL,
// RCPT, DATA, QUIT, printing the reply that ended the transaction.
const pythonSend = `
import json, smtplib, sys
from email.message import EmailMessage
host, port, src, frm, to, subject, body = sys.argv[1:8]
msg = EmailMessage()
msg["From"], msg["To"], msg["Subject"] = frm, to, subject
msg.set_content(body)
def done(code, text):
    print(json.dumps({"code": code, "text": text.decode() if isinstance(text, bytes) else text}))
    sys.exit(0)
s = smtplib.SMTP(host, int(port), local_hostname="device.lan", source_address=(src, 0), timeout=10)
s.ehlo()
for step in (lambda: s.mail(frm), lambda: s.rcpt(to)):
    code, text = step()
    if code != 250:
        done(code, text)
try:
    code, text = s.data(msg.as_bytes())
except smtplib.SMTPDataError as e:
    code, text = e.smtp_code, e.smtp_error
try:
    s.quit()
except Exception:
    pass
done(code, text)
`

// pythonMail sends one mail to alertd's SMTP ingress from src with
// smtplib and returns the reply that ended it.
func pythonMail(t *testing.T, in ingress, src, from, subject, body string) smtpReply {
	t.Helper()
	host, port, _ := net.SplitHostPort(in.smtp)
	out, err := exec.Command("python3", "-c", pythonSend, host, port, src, from, "ops@example.org", subject, body).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 smtplib: %v\n%s", err, out)
	}
	var r smtpReply
	if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
		t.Fatalf("python3 smtplib output %q: %v", out, err)
	}
	return r
}

// wantQueued fails unless r is the 250 of a mail alertd committed.
func wantQueued(t *testing.T, what string, r smtpReply) {
	t.Helper()
	if r.Code != 250 || !strings.Contains(r.Text, "queued as") {
		t.Fatalf("%s: device heard %q, want 250 … queued as …", what, r)
	}
}

// wantHeldBack fails unless r is the 250 of a mail held back as the same
// as a recent one.
func wantHeldBack(t *testing.T, what string, r smtpReply) {
	t.Helper()
	if r.Code != 250 || !strings.Contains(r.Text, "held back") {
		t.Fatalf("%s: device heard %q, want 250 … held back (a duplicate within ingress.cooldown)", what, r)
	}
}

// wantRateLimited fails unless r is the 450 4.7.1 of ingress.rate_limit.
func wantRateLimited(t *testing.T, what string, r smtpReply) {
	t.Helper()
	if r.Code != 450 || !strings.HasPrefix(r.Text, "4.7.1") {
		t.Fatalf("%s: device heard %q, want 450 4.7.1 (ingress.rate_limit)", what, r)
	}
}

// httpAnswer is what a device got from the HTTP ingress.
type httpAnswer struct {
	Status     int
	RetryAfter string
	ID         string `json:"id"`
	Duplicate  bool   `json:"duplicate"`
	Error      string `json:"error"`
}

// devicePost POSTs a JSON body with the device token from src.
func devicePost(t *testing.T, src, url, body string) httpAnswer {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:       func(ctx context.Context, n, a string) (net.Conn, error) { return d.DialContext(ctx, n, a) },
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+deviceToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := httpAnswer{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")}
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("POST %s: %d %q is not JSON: %v", url, resp.StatusCode, b, err)
	}
	return a
}

// postMail is POST /v1/mail to ops@example.org from src.
func postMail(t *testing.T, in ingress, src, subject, text string) httpAnswer {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"to": []string{"ops@example.org"}, "subject": subject, "text": text})
	return devicePost(t, src, in.http+"/v1/mail", string(body))
}

// handSMTP is a sketch speaking SMTP by hand over one connection, so a
// test can stop it at any byte of the exchange.
type handSMTP struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

func dialHand(t *testing.T, in ingress, src string) *handSMTP {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", in.smtp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	h := &handSMTP{t: t, conn: c, tp: textproto.NewConn(c)}
	h.expect(220)
	return h
}

func (h *handSMTP) expect(code int) {
	h.t.Helper()
	if _, msg, err := h.tp.ReadResponse(code); err != nil {
		h.t.Fatalf("hand-spoken SMTP: want %d, got %v %q", code, err, msg)
	}
}

// cmd sends one command and expects code.
func (h *handSMTP) cmd(code int, format string, args ...any) {
	h.t.Helper()
	if err := h.tp.PrintfLine(format, args...); err != nil {
		h.t.Fatal(err)
	}
	h.expect(code)
}

// write sends raw bytes (part of the DATA).
func (h *handSMTP) write(s string) {
	h.t.Helper()
	if _, err := io.WriteString(h.conn, s); err != nil {
		h.t.Fatal(err)
	}
}

// startData runs EHLO, MAIL, RCPT and DATA up to the 354.
func (h *handSMTP) startData(from string) {
	h.t.Helper()
	h.cmd(250, "EHLO sketch.lan")
	h.cmd(250, "MAIL FROM:<%s>", from)
	h.cmd(250, "RCPT TO:<ops@example.org>")
	h.cmd(354, "DATA")
}

// reply reads whatever alertd answers next; an error when it answered
// nothing (the connection died).
func (h *handSMTP) reply() (int, string, error) {
	_ = h.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	return h.tp.ReadResponse(0)
}

// settle lets a copy that should not exist arrive before a test counts.
func settle() { time.Sleep(500 * time.Millisecond) }
