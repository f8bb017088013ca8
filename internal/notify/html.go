package notify

import (
	"bytes"
	"fmt"
	"html/template"
	"strings"

	"github.com/alertd/alertd/internal/rules"
)

// The HTML part of alert mail: what a person needs at 3 am on a phone,
// with inline styles only (mail clients drop <style> and never load remote
// content), no images, no script. Every value is escaped by html/template:
// topics and payloads come from devices.

// Footer is what every mail ends with: which alertd sent it, where to
// look, and how to silence it.
type Footer struct {
	Host      string // the machine alertd runs on
	StatusURL string // http.external_url; "" for none
	Config    string // the configuration file, for the silence command
}

// silenceCommand is the exact line that silences rule on series for 2 h.
func (f Footer) silenceCommand(rule, series string) string {
	cfg := f.Config
	if cfg == "" {
		cfg = "alertd.yaml"
	}
	cmd := "alertd silence add -config " + shellQuote(cfg) + " -rule " + shellQuote(rule)
	if series != "" {
		cmd += " -series " + shellQuote(series)
	}
	return cmd + " -for 2h"
}

// text is the plain-text footer, after the signature separator.
func (f Footer) text(rule, series string) string {
	if f.Host == "" {
		f.Host = "this machine"
	}
	var b strings.Builder
	b.WriteString("\n-- \nSent by alertd on " + f.Host + ".")
	if f.StatusURL != "" {
		b.WriteString(" Status: " + f.StatusURL)
	}
	b.WriteString("\nTo silence for 2 hours: " + f.silenceCommand(rule, series) + "\n")
	return b.String()
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./+#:@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// colour of the state banner.
func colour(state, severity string) string {
	switch {
	case state == rules.StateResolved:
		return "#2e7d32"
	case severity == "critical":
		return "#b00020"
	case severity == "info":
		return "#1565c0"
	}
	return "#a84c00"
}

type alertHTML struct {
	rules.Data
	Subject, Headline, Colour string
	Footer                    Footer
	Silence                   string
}

var alertTmpl = template.Must(template.New("alert").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{{.Subject}}</title></head>
<body style="margin:0;padding:16px;background:#ffffff;color:#1a1a1a;font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;font-size:15px;line-height:1.4">
<div style="max-width:600px">
<p style="margin:0 0 14px;padding:10px 14px;border-radius:6px;background:{{.Colour}};color:#ffffff;font-size:18px;font-weight:bold">{{.Headline}}</p>
<table role="presentation" style="border-collapse:collapse;width:100%">
<tr><td style="padding:4px 12px 4px 0;color:#555555;white-space:nowrap;vertical-align:top">Device</td><td style="padding:4px 0"><b>{{.Device}}</b> <span style="color:#555555">({{.Topic}})</span></td></tr>
{{- if .Silent}}
<tr><td style="padding:4px 12px 4px 0;color:#555555;vertical-align:top">Last seen</td><td style="padding:4px 0">{{.LastSeen}} (silent_for {{.Threshold}})</td></tr>
{{- else}}
<tr><td style="padding:4px 12px 4px 0;color:#555555;vertical-align:top">Value</td><td style="padding:4px 0"><b>{{if .Field}}{{.Field}} = {{end}}{{.Value}}</b> <span style="color:#555555">(threshold {{.Threshold}})</span></td></tr>
{{- end}}
<tr><td style="padding:4px 12px 4px 0;color:#555555;vertical-align:top">Since</td><td style="padding:4px 0">{{.Since}} ({{.Duration}})</td></tr>
<tr><td style="padding:4px 12px 4px 0;color:#555555;vertical-align:top">Rule</td><td style="padding:4px 0">{{.Rule}} ({{.Severity}})</td></tr>
<tr><td style="padding:4px 12px 4px 0;color:#555555;vertical-align:top">Time</td><td style="padding:4px 0">{{.Time}}</td></tr>
{{- if .Suppressed}}
<tr><td style="padding:4px 12px 4px 0;color:#555555;vertical-align:top">Held back</td><td style="padding:4px 0">{{.Suppressed}} notification(s) of this rule since its last mail</td></tr>
{{- end}}
</table>
{{- if .Payload}}
<p style="margin:14px 0 4px;color:#555555">Payload</p>
<pre style="margin:0;padding:8px;background:#f4f4f4;border-radius:4px;white-space:pre-wrap;word-break:break-all;font-size:13px">{{.Payload}}</pre>
{{- end}}
<p style="margin:18px 0 0;color:#555555;font-size:13px">Sent by alertd on {{.Footer.Host}}.{{if .Footer.StatusURL}} <a href="{{.Footer.StatusURL}}" style="color:#1565c0">Status page</a>.{{end}}<br>
To silence for 2 hours: <code style="background:#f4f4f4;padding:1px 4px">{{.Silence}}</code></p>
</div></body></html>
`))

// headline says the state in a few words, as the mail's first line does.
func headline(d *rules.Data) string {
	switch {
	case d.State == rules.StateResolved && d.Silent:
		return fmt.Sprintf("RESOLVED: %s reports again (%s)", d.Device, d.Rule)
	case d.State == rules.StateResolved:
		return fmt.Sprintf("RESOLVED after %s: %s on %s", d.Duration, d.Rule, d.Device)
	case d.Silent:
		return fmt.Sprintf("SILENT for %s: %s (%s)", d.Duration, d.Device, d.Rule)
	case d.Reminder:
		return fmt.Sprintf("STILL FIRING for %s: %s on %s", d.Duration, d.Rule, d.Device)
	}
	return fmt.Sprintf("FIRING: %s on %s", d.Rule, d.Device)
}

// alertHTMLFor renders the HTML part of n's mail.
func alertHTMLFor(footer Footer, n *rules.Notification, suppressed uint64, subject string) (string, error) {
	if footer.Host == "" {
		footer.Host = "this machine"
	}
	d := n.Data(suppressed)
	var b bytes.Buffer
	err := alertTmpl.Execute(&b, alertHTML{Data: d, Subject: subject, Headline: headline(&d), Colour: colour(d.State, d.Severity),
		Footer: footer, Silence: footer.silenceCommand(n.Rule.Name, n.Series)})
	return b.String(), err
}

type groupHTML struct {
	Subject, Intro, Colour, Held string
	Rows                         []groupRow
	Footer                       Footer
	Silence                      string
}

type groupRow struct{ State, Series, Value, Since, At string }

var groupTmpl = template.Must(template.New("group").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{{.Subject}}</title></head>
<body style="margin:0;padding:16px;background:#ffffff;color:#1a1a1a;font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;font-size:15px;line-height:1.4">
<div style="max-width:700px">
<p style="margin:0 0 14px;padding:10px 14px;border-radius:6px;background:{{.Colour}};color:#ffffff;font-size:17px;font-weight:bold">{{.Intro}}</p>
<table style="border-collapse:collapse;width:100%;font-size:14px">
<tr><th style="text-align:left;padding:6px 8px;border-bottom:2px solid #dddddd">State</th><th style="text-align:left;padding:6px 8px;border-bottom:2px solid #dddddd">Series</th><th style="text-align:left;padding:6px 8px;border-bottom:2px solid #dddddd">Value</th><th style="text-align:left;padding:6px 8px;border-bottom:2px solid #dddddd">Since</th><th style="text-align:left;padding:6px 8px;border-bottom:2px solid #dddddd">At</th></tr>
{{- range .Rows}}
<tr><td style="padding:5px 8px;border-bottom:1px solid #eeeeee">{{.State}}</td><td style="padding:5px 8px;border-bottom:1px solid #eeeeee">{{.Series}}</td><td style="padding:5px 8px;border-bottom:1px solid #eeeeee">{{.Value}}</td><td style="padding:5px 8px;border-bottom:1px solid #eeeeee">{{.Since}}</td><td style="padding:5px 8px;border-bottom:1px solid #eeeeee">{{.At}}</td></tr>
{{- end}}
</table>
{{- if .Held}}<p style="color:#555555">{{.Held}}</p>{{end}}
<p style="margin:18px 0 0;color:#555555;font-size:13px">Sent by alertd on {{.Footer.Host}}.{{if .Footer.StatusURL}} <a href="{{.Footer.StatusURL}}" style="color:#1565c0">Status page</a>.{{end}}<br>
To silence for 2 hours: <code style="background:#f4f4f4;padding:1px 4px">{{.Silence}}</code></p>
</div></body></html>
`))
