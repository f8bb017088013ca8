package rules

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"text/template"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/alertd/alertd/internal/config"
)

// Default mail templates, used when a rule and defaults set none. They read
// well for firing, reminder and resolved mails, and for silence rules.
const (
	DefaultSubject = `{{if eq .State "resolved"}}[resolved]{{else}}[{{.Severity}}]{{end}} {{.Rule}}: {{.Device}} ` +
		`{{if .Silent}}{{if eq .State "resolved"}}reporting again{{else}}silent for {{.Duration}}{{end}}` +
		`{{else}}{{if .Field}}{{.Field}}={{end}}{{.Value}}{{end}}`
	DefaultBody = `{{if eq .State "resolved" -}}
Resolved: {{.Rule}} ({{.Severity}}) on {{.Topic}} is back to normal after {{.Duration}}.
{{- else if .Reminder -}}
Still firing: {{.Rule}} ({{.Severity}}) on {{.Topic}}, for {{.Duration}} now.
{{- else -}}
Firing: {{.Rule}} ({{.Severity}}) on {{.Topic}}.
{{- end}}

Topic:      {{.Topic}}
{{- if .Silent}}
Last seen:  {{.LastSeen}} (silent_for {{.Threshold}})
{{- else}}
Value:      {{if .Field}}{{.Field}} = {{end}}{{.Value}} (threshold {{.Threshold}})
{{- end}}
Since:      {{.Since}}
Time:       {{.Time}}
{{- if .Suppressed}}
Held back:  {{.Suppressed}} notification(s) of this rule since its last mail (cooldown or rate limit)
{{- end}}
{{- if .Payload}}

Payload:
{{.Payload}}
{{- end}}
`
)

// Output limits: a subject is one header line; a body is a short message.
const (
	maxSubject      = 200 // runes
	maxBody         = 64 << 10
	maxPayloadShown = 4 << 10
)

// Data is what templates see.
type Data struct {
	Rule      string
	Topic     string
	Device    string   // the level matched by the filter's first '+', else the topic
	Wildcards []string // the levels matched by each '+' and the trailing '#'
	Field     string
	Value     string
	Number    float64 // Value as a number (0 when it is not one)
	Threshold string
	Severity  string
	Payload   string
	Time      Time
	// Suppressed is how many notifications of this rule the cooldown or
	// the rate limit held back since its last mail.
	Suppressed uint64
	State      string // firing | resolved
	Reminder   bool   // a repeat of a firing alert
	Silent     bool   // a silence rule: the device stopped reporting
	Since      Time   // when the problem began
	Duration   string // how long it has lasted (until resolved)
	LastSeen   Time   // the series' last reading
}

// Time prints as "2006-01-02 15:04:05 MST" and keeps time.Time's methods
// ({{.Time.Format "15:04"}}).
type Time struct{ time.Time }

func (t Time) String() string { return t.Format("2006-01-02 15:04:05 MST") }

type templates struct {
	subject, body   *template.Template
	subjectHasState bool // the subject tells firing from resolved itself
	ownStateSubject bool // a rule's own subject that shows the state: kept, not threaded
}

type templateError struct {
	key string
	err error
}

func (e *templateError) Error() string { return e.key + ": " + e.err.Error() }

// parseTemplates parses a rule's templates and renders them once against
// sample data, so a mistake such as {{.Vaule}} fails at load, not at 3 am.
//
// Rules with the same template text share one parsed template (most use
// the defaults): a thousand rules do not hold a thousand copies.
func parseTemplates(rc *config.Rule, r *Rule, cache map[string]*template.Template) (templates, error) {
	var t templates
	var err error
	subject, body := rc.Subject, rc.Body
	if subject == "" {
		subject = DefaultSubject
	}
	if body == "" {
		body = DefaultBody
	}
	t.subjectHasState = strings.Contains(subject, ".State")
	t.ownStateSubject = rc.Subject != "" && t.subjectHasState
	if t.subject, err = parseCached(cache, "subject", subject); err != nil {
		return t, &templateError{"subject", err}
	}
	if t.body, err = parseCached(cache, "body", body); err != nil {
		return t, &templateError{"body", err}
	}
	// Every branch a template may take: firing, reminder, resolved. A
	// dry run depends on the templates and on the shape of the rule's
	// data (wildcards, field, silence), so rules alike are checked once.
	shape := fmt.Sprintf("dry\x00%p\x00%p\x00%d\x00%t\x00%t\x00%t", t.subject, t.body,
		strings.Count(r.Filter, "+")+strings.Count(r.Filter, "#"), strings.HasSuffix(r.Filter, "#"), r.Field != "", r.Silence())
	if _, done := cache[shape]; done {
		return t, nil
	}
	for _, variant := range []func(*Data){
		func(*Data) {},
		func(d *Data) { d.Reminder, d.Suppressed = true, 3 },
		func(d *Data) { d.State = StateResolved },
	} {
		sample := sampleData(r)
		variant(&sample)
		if _, err := render(t.subject, &sample, maxBody); err != nil {
			return t, &templateError{"subject", suggestField(err)}
		}
		if _, err := render(t.body, &sample, maxBody); err != nil {
			return t, &templateError{"body", suggestField(err)}
		}
	}
	cache[shape] = nil
	return t, nil
}

func parseCached(cache map[string]*template.Template, name, text string) (*template.Template, error) {
	key := name + "\x00" + text
	if t, ok := cache[key]; ok {
		return t, nil
	}
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	cache[key] = t
	return t, nil
}

func sampleData(r *Rule) Data {
	levels := strings.Split(r.Filter, "/")
	for i, l := range levels {
		switch l {
		case "+":
			levels[i] = fmt.Sprintf("device%d", i)
		case "#":
			levels[i] = "x"
		}
	}
	name := strings.Join(levels, "/")
	wild, device := describeTopic(r.Filter, name)
	return Data{
		Rule: r.Name, Topic: name, Device: device, Wildcards: wild, Field: r.Field,
		Value: "31.5", Number: 31.5, Threshold: "30", Severity: r.Severity,
		Payload: `{"temp":31.5}`, Time: Time{time.Unix(600, 0)},
		State: StateFiring, Since: Time{time.Unix(0, 0)}, Duration: "10m", LastSeen: Time{time.Unix(0, 0)},
		Silent: r.Silence(),
	}
}

var errTooLong = errors.New("template output too long")

type capWriter struct {
	bytes.Buffer
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	if w.Len()+len(p) > w.max {
		return 0, errTooLong
	}
	return w.Buffer.Write(p)
}

func render(t *template.Template, d *Data, limit int) (string, error) {
	w := &capWriter{max: limit}
	if err := t.Execute(w, d); err != nil {
		return "", fmt.Errorf("%w", unwrapExec(err))
	}
	return w.String(), nil
}

// unwrapExec drops text/template's "template: subject:1:5: executing ..."
// prefix noise down to the part a user can act on.
func unwrapExec(err error) error {
	var ee template.ExecError
	if errors.As(err, &ee) && ee.Err != nil {
		return errors.New(strings.TrimPrefix(ee.Error(), "template: "))
	}
	return err
}

// cleanSubject makes a rendered subject one safe header line: control
// characters (CR and LF above all) become spaces, runs of space collapse,
// and it is cut to maxSubject runes.
func cleanSubject(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	space := false
	n := 0
	for _, r := range s {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			if !space && b.Len() > 0 {
				b.WriteByte(' ')
			}
			space = true
			continue
		}
		if n == maxSubject {
			b.WriteRune('…')
			break
		}
		space = false
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

// ShownPayload is the payload as templates print it: valid UTF-8, cut.
func ShownPayload(p []byte) string {
	if len(p) > maxPayloadShown {
		cut := maxPayloadShown
		for cut > 0 && !utf8.RuneStart(p[cut]) { // do not cut a rune in half
			cut--
		}
		p = p[:cut]
		return strings.ToValidUTF8(string(p), "\uFFFD") + "…"
	}
	return strings.ToValidUTF8(string(p), "\uFFFD")
}
