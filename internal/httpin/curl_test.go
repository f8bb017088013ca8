package httpin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// curlAnswer runs curl against the listener and returns the status, the
// headers and the body it got.
func curlAnswer(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	bin, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	args = append([]string{"-sS", "-i", "--max-time", "5", "-w", "\n%{http_code}"}, args...)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	s := string(out)
	cut := strings.LastIndexByte(s, '\n')
	code, err := strconv.Atoi(s[cut+1:])
	if err != nil {
		t.Fatalf("curl output %q", s)
	}
	head, body, _ := strings.Cut(s[:cut], "\r\n\r\n")
	return code, head, body
}

// Each content type as curl sends it, the way the README shows it.
func TestCurl(t *testing.T) {
	ts := start(t, Options{MaxBodyBytes: 1000}, nil)
	bearer := "Authorization: Bearer " + testToken
	big := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(big, []byte(`"`+strings.Repeat("x", 1000)+`"`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		status  int
		topic   string // of the recorded event, when one is wanted
		payload string
		inBody  string // part of the answer
	}{
		{"JSON", []string{"-H", bearer, "-H", "Content-Type: application/json", "--data-binary", `{"temp": 31.5}`, ts.url + "/v1/events/greenhouse/temp"},
			202, "greenhouse/temp", `{"temp": 31.5}`, `"id":"ev-`},
		{"form, Basic auth", []string{"-u", "esp32:" + testToken, "-d", "temp=31.5", "-d", "room=cellar", ts.url + "/v1/events/cellar"},
			202, "cellar", `{"room":"cellar","temp":31.5}`, `"id"`},
		{"text, token in the URL", []string{"-H", "Content-Type: text/plain", "--data-binary", "21.5", ts.url + "/v1/events/attic/temp?token=" + testToken},
			202, "attic/temp", "21.5", `"id"`},
		{"GET", []string{ts.url + "/v1/events/garden/soil?moisture=12&battery=3.7&token=" + testToken},
			202, "garden/soil", `{"battery":3.7,"moisture":12}`, `"id"`},
		{"percent-encoded topic", []string{"-H", bearer, "-H", "Content-Type: text/plain", "--data-binary", "1", ts.url + "/v1/events/caf%C3%A9%2Fdoor"},
			202, "café/door", "1", `"id"`},
		{"mail, form", []string{"-H", bearer, "--data-urlencode", "to=ops@example.org", "--data-urlencode", "subject=Door open",
			"--data-urlencode", "text=The cellar door is open.", ts.url + "/v1/mail"}, 202, "", "", `"id":"mail-1"`},
		{"mail outside relay_to", []string{"-H", bearer, "-H", "Content-Type: application/json", "--data-binary",
			`{"to":["me@gmail.com"],"subject":"x","text":"y"}`, ts.url + "/v1/mail"}, 403, "", "", `"error":"recipient \"me@gmail.com\" is not allowed`},
		{"wrong token", []string{"-H", "Authorization: Bearer nope", "-d", "t=1", ts.url + "/v1/events/a"}, 401, "", "", `"error"`},
		{"dot segments kept by --path-as-is", []string{"--path-as-is", "-H", bearer, "-d", "t=1", ts.url + "/v1/events/a/../b"}, 400, "", "", "are refused"},
		{"over max_body_bytes", []string{"-H", bearer, "-H", "Content-Type: application/json", "--data-binary", "@" + big, ts.url + "/v1/events/a"},
			413, "", "", "larger than 1000 bytes"},
		{"no content type", []string{"-H", bearer, "-H", "Content-Type:", "--data-binary", "1", ts.url + "/v1/events/a"}, 415, "", "", "Content-Type"},
		{"DELETE", []string{"-X", "DELETE", "-H", bearer, ts.url + "/v1/events/a"}, 405, "", "", "not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(mustEvents(ts))
			status, head, body := curlAnswer(t, tc.args...)
			if status != tc.status || !strings.Contains(body, tc.inBody) {
				t.Fatalf("answer %d %s, want %d with %s", status, body, tc.status, tc.inBody)
			}
			if !strings.Contains(head, "Cache-Control: no-store") {
				t.Errorf("headers without Cache-Control: no-store:\n%s", head)
			}
			evs, _ := ts.sink.recorded()
			if tc.topic == "" {
				if len(evs) != before {
					t.Errorf("an event was recorded: %+v", evs[len(evs)-1])
				}
				return
			}
			if len(evs) != before+1 || evs[before].Topic != tc.topic || string(evs[before].Payload) != tc.payload {
				t.Errorf("events = %+v, want %s %s", evs[before:], tc.topic, tc.payload)
			}
		})
	}
	if strings.Contains(ts.logs.String(), testToken) {
		t.Errorf("the log holds the token:\n%s", ts.logs.String())
	}
}
