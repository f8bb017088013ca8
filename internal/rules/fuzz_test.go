package rules

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/alertd/alertd/internal/event"
)

// FuzzExtract: no payload makes extraction panic, hang or return a value
// that disagrees with encoding/json about what the payload holds.
func FuzzExtract(f *testing.F) {
	for _, s := range []string{
		`{"temp": 31.5}`, `{"power": {"battery": 14}}`, `{"temp": "21.5"}`, `{"temp": NaN}`,
		`{"temp": 1e999}`, `[1,2]`, `"x"`, `31`, `{"temp": {"v": 1}}`, `{"a":"\u00e9\n"}`,
		"\xff\xfe", `{"temp": 1, "temp": 2}`, `{"readings": [{"v": 3}]}`, strings.Repeat("[", 100),
	} {
		f.Add([]byte(s), "temp")
		f.Add([]byte(s), "power.battery")
	}
	f.Fuzz(func(t *testing.T, payload []byte, field string) {
		var path []string
		if field != "" {
			path = strings.Split(field, ".")
		}
		if checkPayload(payload) != nil {
			return
		}
		v, err := extract(payload, path)
		if err != nil {
			return
		}
		if v.IsNum && (math.IsNaN(v.Num) || math.IsInf(v.Num, 0)) {
			t.Fatalf("extract returned a non-finite number %v from %q", v.Num, payload)
		}
		if !utf8.ValidString(v.Text) {
			t.Fatalf("extract returned invalid UTF-8 %q from %q", v.Text, payload)
		}
		// Where encoding/json reads the same object field as a number,
		// both must agree on it (keys written once and without escapes:
		// for a duplicate key json takes the last, alertd the first).
		if len(path) == 1 && v.Kind == KindNumber && !strings.Contains(string(payload), `\`) &&
			strings.Count(string(payload), `"`+path[0]+`"`) == 1 {
			var m map[string]json.RawMessage
			var n float64
			if json.Unmarshal(payload, &m) == nil && json.Unmarshal(m[path[0]], &n) == nil && n != v.Num {
				t.Fatalf("field %s: alertd read %v, encoding/json %v, payload %q", path[0], v.Num, n, payload)
			}
		}
	})
}

// FuzzRender: whatever a device publishes, a rendered subject is one line
// and rendering never fails with the default templates.
func FuzzRender(f *testing.F) {
	e, _ := compile(f, `
defaults: {to: [ops@example.org]}
rules:
  - {name: any, topic: "d/#", field: v, not_equals: "__never__"}
  - {name: raw, topic: "r/+", not_equals: "__never__"}
`)
	for _, s := range []string{`{"v": "x\r\nBcc: a@b"}`, `{"v": 1}`, "\x00\x01", `{"v": "é\u2028"}`, strings.Repeat("a", 5000)} {
		f.Add("d/x/y", []byte(s))
		f.Add("r/x", []byte(s))
	}
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		ev := &event.Event{Topic: topic, Payload: payload, Received: time.Unix(1700000000, 0)}
		for _, rd := range e.Evaluate(ev, nil) {
			if !rd.Breach {
				continue
			}
			for _, n := range []Notification{rd.Firing(), func() Notification {
				n := rd.Firing()
				n.State = StateResolved
				return n
			}()} {
				subject, body, err := n.Render(1)
				if err != nil {
					t.Fatalf("default templates failed: %v", err)
				}
				if strings.ContainsAny(subject, "\r\n") || !utf8.ValidString(subject) || utf8.RuneCountInString(subject) > maxSubject+20 {
					t.Fatalf("subject %q is not one clean line", subject)
				}
				if !utf8.ValidString(body) {
					t.Fatalf("body is not valid UTF-8")
				}
			}
		}
	})
}
