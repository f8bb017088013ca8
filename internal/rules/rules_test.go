package rules

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/event"
)

// recorder is an Observer that remembers why payloads were refused.
type recorder struct {
	mu   sync.Mutex
	errs map[string][]error
}

func (r *recorder) InvalidPayload(rule, _ string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.errs == nil {
		r.errs = map[string][]error{}
	}
	r.errs[rule] = append(r.errs[rule], err)
}

func compile(t testing.TB, yaml string) (*Engine, *recorder) {
	t.Helper()
	cfg, err := config.Load(strings.NewReader(yaml), "test.yaml")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	rec := &recorder{}
	e, err := Compile(cfg, rec)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return e, rec
}

// evaluate returns a firing notification for each reading that breaches.
func evaluate(e *Engine, topic, payload string) []Notification {
	var ns []Notification
	for _, rd := range e.Evaluate(&event.Event{Source: "test", Topic: topic, Payload: []byte(payload), Received: time.Unix(1700000000, 0)}, nil) {
		if rd.Breach {
			ns = append(ns, rd.Firing())
		}
	}
	return ns
}

func names(ns []Notification) string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Rule.Name)
	}
	return strings.Join(out, ",")
}

const conditions = `
defaults: {to: [ops@example.org]}
rules:
  - {name: hot, topic: "s/+/t", field: temp, above: 30}
  - {name: cold, topic: "s/+/t", field: temp, below: 5}
  - {name: band, topic: "s/+/t", field: temp, above: 40, below: -10}
  - {name: offline, topic: "s/+/status", equals: offline}
  - {name: not-ok, topic: "s/+/status", not_equals: ok}
  - {name: code1, topic: "s/+/code", field: c, equals: 1}
  - {name: battery, topic: "s/+/t", field: power.battery, below: 20}
  - {name: first, topic: "s/+/list", field: readings.1.v, above: 10}
  - {name: raw, topic: "raw/#", above: 100}
`

func TestConditions(t *testing.T) {
	e, _ := compile(t, conditions)
	cases := []struct {
		topic, payload, want string
	}{
		{"s/a/t", `{"temp": 30.5}`, "hot"},
		{"s/a/t", `{"temp": 30}`, ""}, // strict: 30 is not above 30
		{"s/a/t", `{"temp": 4.9}`, "cold"},
		{"s/a/t", `{"temp": 41}`, "hot,band"},
		{"s/a/t", `{"temp": -11}`, "cold,band"},
		{"s/a/t", `{"temp": "31"}`, "hot"}, // devices that send numbers as strings
		{"s/a/t", `{"temp": 20, "power": {"battery": 15}}`, "battery"},
		{"s/a/status", `offline`, "offline,not-ok"},
		{"s/a/status", ` ok `, ""},
		{"s/a/code", `{"c": 1.0}`, "code1"}, // 1 written as a number equals 1.0
		{"s/a/code", `{"c": "1"}`, "code1"},
		{"s/a/code", `{"c": 2}`, ""},
		{"s/a/list", `{"readings": [{"v": 1}, {"v": 11}]}`, "first"},
		{"s/a/list", `{"readings": [{"v": 11}, {"v": 1}]}`, ""},
		{"raw/x/y", `101`, "raw"},
		{"raw", `101`, "raw"}, // '#' matches the parent level
		{"other/a/t", `{"temp": 99}`, ""},
		{"s/a/b/t", `{"temp": 99}`, ""}, // '+' is exactly one level
	}
	for _, c := range cases {
		t.Run(c.topic+" "+c.payload, func(t *testing.T) {
			if got := names(evaluate(e, c.topic, c.payload)); got != c.want {
				t.Errorf("fired %q, want %q", got, c.want)
			}
		})
	}
}

func TestHostilePayloadsNeverMatchAndAreCounted(t *testing.T) {
	e, rec := compile(t, conditions)
	deep := strings.Repeat(`{"a":`, 1000) + "1" + strings.Repeat("}", 1000)
	cases := []struct {
		payload string
		want    error
	}{
		{`not json`, ErrNotJSON},
		{`{"temp": 31`, ErrNotJSON},
		{`[31]`, ErrNotObject},
		{`{"hum": 31}`, ErrFieldMissing},
		{`{"temp": {"v": 31}}`, ErrFieldNotValue},
		{`{"temp": "hot"}`, ErrNotNumber},
		{`{"temp": "NaN"}`, ErrNotNumber},
		{`{"temp": "Infinity"}`, ErrNotNumber},
		{`{"temp": 1e999}`, ErrNotFinite},
		{`{"temp": "0x1F"}`, ErrNotNumber},
		{`{"temp": true}`, ErrNotNumber},
		{`{"temp": null}`, ErrNotNumber},
		{"{\"temp\": \"\xff\xfe\"}", ErrBadUTF8},
		{strings.Repeat(" ", MaxPayload+1), ErrTooLarge},
		{deep, ErrTooDeep},
		{"\x00\x01\x02", ErrNotJSON}, // binary that happens to be valid UTF-8
	}
	for _, c := range cases {
		rec.errs = nil
		if got := evaluate(e, "s/dev/t", c.payload); len(got) != 0 {
			t.Errorf("payload %.40q fired %s", c.payload, names(got))
		}
		hot := rec.errs["hot"]
		if len(hot) != 1 || !errors.Is(hot[0], c.want) {
			t.Errorf("payload %.40q: rule hot saw %v, want %v", c.payload, hot, c.want)
		}
	}
}

func TestNotificationData(t *testing.T) {
	e, _ := compile(t, `
defaults: {to: [ops@example.org]}
rules:
  - name: salon
    topic: "casa/+/sensores/#"
    field: temp
    above: 25
    severity: critical
    subject: "Temperatura alta en el salón {{.Device}}: {{.Value}} °C (umbral {{.Threshold}})"
    body: "{{.Topic}} {{index .Wildcards 1}} {{.Field}}={{.Value}} n={{.Number}} sup={{.Suppressed}} {{.Payload}}"
`)
	ns := evaluate(e, "casa/salon/sensores/planta1/x", `{"temp": 26.5}`)
	if len(ns) != 1 {
		t.Fatalf("want one notification, got %d", len(ns))
	}
	subject, body, err := ns[0].Render(3)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Temperatura alta en el salón salon: 26.5 °C (umbral 25)"; subject != want {
		t.Errorf("subject %q, want %q", subject, want)
	}
	if want := `casa/salon/sensores/planta1/x planta1/x temp=26.5 n=26.5 sup=3 {"temp": 26.5}`; body != want {
		t.Errorf("body %q, want %q", body, want)
	}
	if ns[0].Series != "casa/salon/sensores/planta1/x" {
		t.Errorf("series %q", ns[0].Series)
	}
}

func TestSubjectCannotCarryLineBreaks(t *testing.T) {
	e, _ := compile(t, `
defaults: {to: [ops@example.org]}
rules:
  - {name: s, topic: "d/+", field: state, equals: "x\r\nBcc: evil@example.com", subject: "{{.Value}}"}
`)
	ns := evaluate(e, "d/1", `{"state": "x\r\nBcc: evil@example.com"}`)
	if len(ns) != 1 {
		t.Fatalf("want a notification, got %d", len(ns))
	}
	subject, _, err := ns[0].Render(0)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(subject, "\r\n") || subject != "x Bcc: evil@example.com" {
		t.Errorf("subject %q must be one line", subject)
	}
}

func TestDefaultTemplatesRender(t *testing.T) {
	e, _ := compile(t, conditions)
	ns := evaluate(e, "s/kitchen/t", `{"temp": 35}`)
	subject, body, err := ns[0].Render(2)
	if err != nil {
		t.Fatal(err)
	}
	if subject != "[warning] hot: kitchen temp=35" {
		t.Errorf("default subject %q", subject)
	}
	for _, want := range []string{"s/kitchen/t", "temp = 35 (threshold 30)", "Held back:  2", `{"temp": 35}`} {
		if !strings.Contains(body, want) {
			t.Errorf("default body lacks %q:\n%s", want, body)
		}
	}
}

func TestTemplateErrorsArePositioned(t *testing.T) {
	cfg, err := config.Load(strings.NewReader(`defaults: {to: [a@example.org]}
rules:
  - name: typo
    topic: a/b
    above: 1
    subject: "{{.Vaule}}"
  - name: syntax
    topic: a/c
    above: 1
    body: "{{if .Value}}"
`), "r.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Compile(cfg, nil)
	var errs config.Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("want 2 positioned errors, got %v", err)
	}
	if got := errs[0].Error(); !strings.HasPrefix(got, "r.yaml:6:14: ") || !strings.HasSuffix(got, "can't evaluate field Vaule in type *rules.Data (did you mean .Value?)") {
		t.Errorf("first error %q", got)
	}
	if got := errs[1].Error(); !strings.HasPrefix(got, "r.yaml:10:11: ") {
		t.Errorf("second error %q", got)
	}
}

// TestTemplateTypoSuggestsTheField: a field the template data does not
// have gets the nearest one, in any case; nothing close, no guess.
func TestTemplateTypoSuggestsTheField(t *testing.T) {
	for _, tc := range []struct{ subject, want string }{
		{"{{.value}}", "can't evaluate field value in type *rules.Data (did you mean .Value?)"},
		{"{{.Devce}}", "(did you mean .Device?)"},
		{"{{.Treshold}}", "(did you mean .Threshold?)"},
		{`{{.Time.Fromat "15:04"}}`, "can't evaluate field Fromat in type rules.Time (did you mean .Format?)"},
		{"{{.Humidity}}", "can't evaluate field Humidity in type *rules.Data"},
	} {
		cfg, err := config.Load(strings.NewReader("defaults: {to: [a@example.org]}\nrules:\n  - {name: r, topic: a/b, above: 1, subject: '"+tc.subject+"'}\n"), "r.yaml")
		if err != nil {
			t.Fatal(err)
		}
		_, err = Compile(cfg, nil)
		if err == nil || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error ending %q", tc.subject, err, tc.want)
		}
		if strings.HasSuffix(tc.want, "Data") && strings.Contains(err.Error(), "did you mean") {
			t.Errorf("%s: a guess without a close field: %v", tc.subject, err)
		}
	}
}

func TestIndexMatchesLikeALinearScan(t *testing.T) {
	filters := []string{"#", "+", "a/#", "a/+", "a/b", "a/+/c", "+/+/c", "a/b/#", "$SYS/#", "+/b", "a//c", "a/+/+/#"}
	var yaml strings.Builder
	yaml.WriteString("defaults: {to: [a@example.org]}\nrules:\n")
	for i, f := range filters {
		fmt.Fprintf(&yaml, "  - {name: r%d, topic: %q, equals: x}\n", i, f)
	}
	e, _ := compile(t, yaml.String())
	topics := []string{"a", "a/b", "a/b/c", "a/x/c", "x/y/c", "$SYS/x", "$SYS", "a//c", "/b", "a/b/c/d", "b"}
	for _, topic := range topics {
		var want []string
		for i, f := range filters {
			if matchesByScan(f, topic) {
				want = append(want, fmt.Sprintf("r%d", i))
			}
		}
		if got := names(evaluate(e, topic, "x")); got != strings.Join(want, ",") {
			t.Errorf("topic %q: index gave %q, scan gives %q", topic, got, strings.Join(want, ","))
		}
	}
}

// matchesByScan is the MQTT 3.1.1 matching rule written the obvious way.
func matchesByScan(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(t) || (l != "+" && l != t[i]) {
			return false
		}
	}
	return len(f) == len(t)
}

func TestNonMatchingTopicDoesNotAllocate(t *testing.T) {
	e, _ := compile(t, conditions)
	ev := &event.Event{Topic: "unwatched/device/x", Payload: []byte(`{"temp": 1}`)}
	if n := testing.AllocsPerRun(100, func() { e.Evaluate(ev, nil) }); n != 0 {
		t.Errorf("non-matching topic allocates %.0f times per message", n)
	}
}

func TestWhenExpression(t *testing.T) {
	e, rec := compile(t, `
defaults: {to: [ops@example.org]}
rules:
  - {name: dry-heat, topic: "gh/+", when: 'temp > 30 && hum < 20'}
`)
	cases := []struct {
		payload string
		fires   bool
		invalid bool
	}{
		{`{"temp": 31, "hum": 15}`, true, false},
		{`{"temp": 31, "hum": 25}`, false, false},
		{`{"temp": 29, "hum": 15}`, false, false},
		{`{"temp": "hot", "hum": 15}`, false, true}, // a string compared with a number
		{`{"hum": 15}`, false, true},                // temp missing
		{`not json`, false, true},
		{`[1]`, false, true},
	}
	for _, c := range cases {
		before := len(rec.errs["dry-heat"])
		got := names(evaluate(e, "gh/a", c.payload))
		if (got == "dry-heat") != c.fires {
			t.Errorf("%s: fired %q, want fires=%v", c.payload, got, c.fires)
		}
		if invalid := len(rec.errs["dry-heat"]) > before; invalid != c.invalid {
			t.Errorf("%s: counted invalid %v, want %v", c.payload, invalid, c.invalid)
		}
	}
	ns := evaluate(e, "gh/a", `{"temp": 31, "hum": 15}`)
	subject, _, err := ns[0].Render(0)
	if err != nil || subject != "[warning] dry-heat: a temp > 30 && hum < 20" {
		t.Errorf("subject %q, %v", subject, err)
	}
}

func TestWhenErrorsArePositioned(t *testing.T) {
	cfg, err := config.Load(strings.NewReader(`
defaults: {to: [ops@example.org]}
rules:
  - name: bad
    topic: "gh/+"
    when: 'temp > > 30'
  - name: notbool
    topic: "gh/+"
    when: '1 + 1'
`), "rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Compile(cfg, nil)
	var errs config.Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("want two positioned errors, got %v", err)
	}
	if got := errs[0].Error(); !strings.HasPrefix(got, "rules.yaml:6:11: rule \"bad\": when:") || !strings.Contains(got, "column") {
		t.Errorf("first error %q", got)
	}
	if got := errs[1].Error(); !strings.HasPrefix(got, "rules.yaml:9:11: rule \"notbool\": when:") || !strings.Contains(got, "bool") {
		t.Errorf("second error %q", got)
	}
}

// Rules that read the same field share one lookup per payload; each still
// gets its own verdict, and a field of the same name deeper down, or
// another field, is looked up on its own.
func TestRulesOnTheSameFieldEachJudgeIt(t *testing.T) {
	e, rec := compile(t, `
defaults: {to: [ops@example.org]}
rules:
  - {name: warm, topic: "s/+/t", field: temp, above: 25}
  - {name: hot, topic: "s/+/t", field: temp, above: 30}
  - {name: very-hot, topic: "s/+/t", field: temp, above: 40}
  - {name: box-hot, topic: "s/+/t", field: box.temp, above: 50}
  - {name: dry, topic: "s/+/t", field: hum, below: 30}
  - {name: wet, topic: "s/+/t", field: hum, above: 80}
  - {name: low, topic: "s/+/t", field: battery, below: 10}
`)
	if got := names(evaluate(e, "s/a/t", `{"temp": 31, "hum": 20, "box": {"temp": 55}}`)); got != "warm,hot,box-hot,dry" {
		t.Errorf("breaching: %s, want warm,hot,box-hot,dry", got)
	}
	if got := names(evaluate(e, "s/a/t", `{"hum": 90, "temp": 26}`)); got != "warm,wet" {
		t.Errorf("breaching: %s, want warm,wet", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.errs["low"]) != 2 || len(rec.errs["box-hot"]) != 1 || len(rec.errs["hot"]) != 0 {
		t.Errorf("missing fields reported: %v", rec.errs)
	}
}
