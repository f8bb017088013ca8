package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the # want: lines of testdata/*.bad.yaml from what Load reports (review the diff!)")

// Each testdata/*.bad.yaml starts with comment lines saying what it shows,
// then one "# want: LINE:COL: message" line per error Load must report, in
// file order. The file name is prefixed when comparing.
const wantPrefix = "# want: "

func wantLines(data []byte) []string {
	var want []string
	for _, line := range strings.Split(string(data), "\n") {
		if msg, ok := strings.CutPrefix(line, wantPrefix); ok {
			want = append(want, msg)
		}
	}
	return want
}

// loadErrors loads data as file and returns its errors as "LINE:COL: message".
func loadErrors(t *testing.T, file string, data []byte) []string {
	t.Helper()
	_, err := Load(bytes.NewReader(data), file)
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Load(%s) = %v, want positioned errors", file, err)
	}
	var got []string
	for _, e := range errs {
		line := e.Error()
		if !strings.HasPrefix(line, file+":") {
			t.Errorf("error %q does not start with the file name", line)
		}
		if e.Pos.Line < 1 || e.Pos.Col < 1 {
			t.Errorf("error %q has no position", line)
		}
		got = append(got, strings.TrimPrefix(line, file+":"))
	}
	return got
}

// TestLoadBadFiles pins, for each kind of mistake, the exact message and
// line:column a user sees, and that every error in a file is reported.
func TestLoadBadFiles(t *testing.T) {
	unsetEnv(t, "ALERTD_TEST_UNSET")
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil || len(files) < 15 {
		t.Fatalf("want the testdata/*.bad.yaml files, found %d (%v)", len(files), err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".bad.yaml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				data = rewriteWant(t, file, data)
			}
			want := wantLines(data)
			if len(want) == 0 {
				t.Fatalf("%s has no %q lines", file, wantPrefix)
			}
			got := loadErrors(t, file, data)
			if !slices.Equal(got, want) {
				t.Errorf("%s: Load reported\n\t%s\nwant\n\t%s", file, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
			}
		})
	}
}

// rewriteWant replaces the want lines of data with what Load reports, put
// right after the leading comment lines, and saves the file.
func rewriteWant(t *testing.T, file string, data []byte) []byte {
	t.Helper()
	var header, body []string
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, wantPrefix):
		case len(body) == 0 && strings.HasPrefix(line, "#"):
			header = append(header, line)
		default:
			body = append(body, line)
		}
	}
	join := func(want []string) []byte {
		return []byte(strings.Join(slices.Concat(header, want, body), "\n"))
	}
	// Comment lines do not change what is reported, only where: load once
	// to count the errors, then again with that many lines in place.
	n := len(loadErrors(t, file, join(nil)))
	placeholder := slices.Repeat([]string{wantPrefix}, n)
	var want []string
	for _, msg := range loadErrors(t, file, join(placeholder)) {
		want = append(want, wantPrefix+msg)
	}
	out := join(want)
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func unsetEnv(t *testing.T, name string) {
	t.Helper()
	t.Setenv(name, "") // restores the old value after the test
	os.Unsetenv(name)
}

func TestLoadGoodFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.good.yaml")
	files = append(files, filepath.Join("..", "..", "rules.example.yaml"))
	if len(files) < 3 {
		t.Fatalf("found only %v", files)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			cfg, err := LoadFile(file)
			if err != nil {
				t.Fatalf("LoadFile(%s):\n%v", file, err)
			}
			if len(cfg.Rules) == 0 {
				t.Error("no rules loaded")
			}
		})
	}
}

func TestLoadExample(t *testing.T) {
	path := filepath.Join("..", "..", "rules.example.yaml")
	cfg, err := LoadFile(path)
	if err != nil {
		t.Fatalf("the example shipped with alertd does not load:\n%v", err)
	}
	dir, _ := filepath.Abs(filepath.Dir(path))
	if got, _ := filepath.Abs(cfg.Store.Path); got != filepath.Join(dir, "alertd.db") {
		t.Errorf("store.path %q, want alertd.db beside the example", cfg.Store.Path)
	}
	if cfg.SMTP != nil || cfg.MQTT.Broker != "" {
		t.Errorf("the example must run with nothing else installed (no smtp, no broker): %+v %+v", cfg.SMTP, cfg.MQTT)
	}
	if len(cfg.Rules) < 2 || cfg.Rules[0].Name != "greenhouse-hot" || cfg.Rules[1].Name != "greenhouse-frost" {
		t.Fatalf("the README's quick start uses greenhouse-hot, then greenhouse-frost: %+v", cfg.Rules)
	}
	hot, frost := cfg.Rules[0], cfg.Rules[1]
	if hot.Cooldown.D() != 30*time.Minute || hot.RateLimit != (Rate{5, time.Hour}) || !slices.Equal(hot.To, []string{"garden@example.org"}) {
		t.Errorf("greenhouse-hot's own keys lost: cooldown %s rate %s to %v", hot.Cooldown, hot.RateLimit, hot.To)
	}
	if frost.Cooldown.D() != 10*time.Minute || frost.RateLimit != (Rate{20, time.Hour}) || !slices.Equal(frost.To, []string{"ops@example.org"}) {
		t.Errorf("greenhouse-frost did not inherit defaults: cooldown %s rate %s to %v", frost.Cooldown, frost.RateLimit, frost.To)
	}
}

// TestLoadFullConfig loads a file that sets every key and checks each value
// arrives where the rest of alertd reads it.
func TestLoadFullConfig(t *testing.T) {
	t.Setenv("ALERTD_TEST_SMTP_PASSWORD", "hunter2-from-env")
	cfg, err := LoadFile("testdata/full.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("testdata")
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }

	m := cfg.MQTT
	if m.Broker != "ssl://broker.example.org:8883" || m.ClientID != "alertd-greenhouse" || m.Username != "alertd" || m.QoS != 0 {
		t.Errorf("mqtt: %+v", m)
	}
	if m.Password.Reveal() != "from-a-file" {
		t.Errorf("mqtt password from password_file: got %q", m.Password.Reveal())
	}
	if abs(m.TLS.CAFile) != filepath.Join(dir, "certs/ca.pem") || abs(m.TLS.CertFile) != filepath.Join(dir, "certs/client.pem") ||
		m.TLS.KeyFile != "/etc/alertd/client.key" || m.TLS.InsecureSkipVerify {
		t.Errorf("mqtt.tls: %+v", m.TLS)
	}

	s := cfg.SMTP
	if s == nil {
		t.Fatal("smtp section lost")
	}
	if s.Host != "smtp.example.org" || s.Port != 465 || s.Security != "tls" || s.Auth != "login" ||
		s.Username != "alerts@example.org" || s.AllowInsecureAuth || s.From != "Invernadero <alerts@example.org>" ||
		s.Helo != "alertd.example.org" || s.Timeout.D() != time.Minute {
		t.Errorf("smtp: %+v", s)
	}
	if s.Password.Reveal() != "hunter2-from-env" {
		t.Errorf("smtp password from ${ALERTD_TEST_SMTP_PASSWORD}: got %q", s.Password.Reveal())
	}
	if abs(s.TLS.CAFile) != filepath.Join(dir, "certs/smtp-ca.pem") || !s.TLS.InsecureSkipVerify {
		t.Errorf("smtp.tls: %+v", s.TLS)
	}
	if s.Retry.Initial.D() != 10*time.Second || s.Retry.Max.D() != 5*time.Minute || s.Retry.GiveUpAfter.D() != 48*time.Hour {
		t.Errorf("smtp.retry: %+v", s.Retry)
	}

	if abs(cfg.Store.Path) != filepath.Join(dir, "state/alertd.db") || abs(cfg.Store.Spool) != filepath.Join(dir, "state/spool") {
		t.Errorf("store: %+v (the spool defaults to spool/ beside the store)", cfg.Store)
	}
	if cfg.Store.CheckpointInterval.D() != time.Minute || cfg.Limits.MaxSeries != 50000 {
		t.Errorf("store.checkpoint_interval %s, limits.max_series %d", cfg.Store.CheckpointInterval, cfg.Limits.MaxSeries)
	}
	if cfg.HTTP.Listen != "off" || cfg.Log.Level != "debug" || cfg.Log.Format != "json" {
		t.Errorf("http %+v, log %+v", cfg.HTTP, cfg.Log)
	}

	if len(cfg.Rules) != 5 {
		t.Fatalf("%d rules, want 5", len(cfg.Rules))
	}
	in, own, eq, ne, silence := &cfg.Rules[0], &cfg.Rules[1], &cfg.Rules[2], &cfg.Rules[3], &cfg.Rules[4]
	// Every key of defaults reaches a rule that does not set it...
	if in.Field != "temp" || in.Severity != "critical" || !slices.Equal(in.To, []string{"ops@example.org", "Night Shift <night@example.org>"}) ||
		in.Subject != "{{.Rule}} on {{.Device}}" || in.Body != "{{.Topic}}: {{.Value}}" || in.Cooldown.D() != time.Hour ||
		in.RateLimit != (Rate{3, 24 * time.Hour}) || in.For.D() != 2*time.Minute || in.NotifyResolved == nil || *in.NotifyResolved ||
		in.Repeat.D() != 4*time.Hour || in.Above == nil || *in.Above != 30 || in.MaxSeries != 5000 {
		t.Errorf("rule inherits: %+v", in)
	}
	// ...and a rule's own keys win, zero values included.
	if own.Field != "power.battery" || own.Severity != "info" || !slices.Equal(own.To, []string{"garden@example.org"}) ||
		own.Subject != "battery {{.Value}}" || own.Body != "see {{.Topic}}" || own.Cooldown.D() != 0 ||
		own.RateLimit != (Rate{10, time.Minute}) || own.For.D() != 0 || own.NotifyResolved == nil || !*own.NotifyResolved ||
		own.Repeat.D() != 0 || own.Hysteresis == nil || *own.Hysteresis != 2 || *own.Above != 90 || *own.Below != 15 ||
		own.MaxSeries != 40000 {
		t.Errorf("rule overrides: %+v", own)
	}
	if eq.Field != "" || eq.Equals == nil || !eq.Equals.IsNum || eq.Equals.Num != 1 {
		t.Errorf("equals-number: field %q equals %+v (field: \"\" must override the default, 1 must be a number)", eq.Field, eq.Equals)
	}
	if ne.NotEquals == nil || ne.NotEquals.IsNum || ne.NotEquals.Text != "on" {
		t.Errorf("not-equals-text: %+v (a quoted \"on\" is text, not a boolean)", ne.NotEquals)
	}
	if silence.SilentFor.D() != 24*time.Hour || silence.For.D() != 0 {
		t.Errorf("silence: silent_for %s for %s", silence.SilentFor, silence.For)
	}
}

// TestDefaults loads the smallest useful file and checks every default the
// README documents.
func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "alertd.yaml")
	cfg, err := Load(strings.NewReader(`
defaults:
  to: [ops@example.org]
rules:
  - {name: hot, topic: "sensors/+/telemetry", field: temp, above: 30}
  - {name: cold, topic: "sensors/+/telemetry", field: temp, below: 2, cooldown: 1m}
`), file)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	checks := []struct {
		what      string
		got, want any
	}{
		{"mqtt.broker", cfg.MQTT.Broker, ""},
		{"mqtt.listen", cfg.MQTT.Listen, "127.0.0.1:18830"},
		{"mqtt.qos", cfg.MQTT.QoS, 1},
		{"mqtt.client_id", cfg.MQTT.ClientID, "alertd-" + sanitizeClientID(host)},
		{"smtp", cfg.SMTP == nil, true},
		{"store.path", cfg.Store.Path, filepath.Join(dir, "alertd.db")},
		{"store.spool", cfg.Store.Spool, filepath.Join(dir, "spool")},
		{"http.listen", cfg.HTTP.Listen, "127.0.0.1:9464"},
		{"log.level", cfg.Log.Level, "info"},
		{"log.format", cfg.Log.Format, "text"},
		{"severity", cfg.Rules[0].Severity, "warning"},
		{"to (from defaults)", fmt.Sprint(cfg.Rules[0].To), "[ops@example.org]"},
		{"cooldown", cfg.Rules[0].Cooldown.D(), 10 * time.Minute},
		{"rate_limit", cfg.Rules[0].RateLimit, Rate{20, time.Hour}},
		{"notify_resolved", cfg.Rules[0].NotifyResolved == nil, true},
		{"own cooldown", cfg.Rules[1].Cooldown.D(), time.Minute},
		{"rate_limit beside own cooldown", cfg.Rules[1].RateLimit, Rate{20, time.Hour}},
		{"store.checkpoint_interval", cfg.Store.CheckpointInterval.D(), 30 * time.Second},
		{"limits.max_series", cfg.Limits.MaxSeries, 100000},
		{"max_series", cfg.Rules[0].MaxSeries, 20000},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
}

// A rule's max_series defaults to 20,000, or to limits.max_series when
// that is lower, so that lowering the global limit alone is valid.
func TestRuleMaxSeriesWithinALowerGlobalLimit(t *testing.T) {
	cfg, err := Load(strings.NewReader(`
limits: {max_series: 500}
defaults: {to: [ops@example.org]}
rules:
  - {name: quiet, topic: "q/+", silent_for: 1h}
  - {name: own, topic: "o/+", silent_for: 1h, max_series: 50}
`), "alertd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Rules[0].MaxSeries; got != 500 {
		t.Errorf("default max_series under limits.max_series 500: %d, want 500", got)
	}
	if got := cfg.Rules[1].MaxSeries; got != 50 {
		t.Errorf("own max_series: %d, want 50", got)
	}
}

func TestSMTPSecurityAndPortDefaults(t *testing.T) {
	for _, tc := range []struct {
		keys     string
		security string
		port     int
	}{
		{"", "starttls", 587},
		{"port: 587", "starttls", 587},
		{"port: 465", "tls", 465},
		{"port: 25", "starttls", 25},
		{"port: 2525", "starttls", 2525},
		{"security: tls", "tls", 465},
		{"security: none", "none", 25},
		{"security: starttls", "starttls", 587},
		{"{security: tls, port: 2465}", "tls", 2465},           // a port of one's own: as written
		{"{security: starttls, port: 2525}", "starttls", 2525}, // (465 and 587 mismatched: port*.bad.yaml)
	} {
		t.Run(tc.keys, func(t *testing.T) {
			keys := strings.Trim(tc.keys, "{}")
			yaml := "smtp: {host: smtp.example.org, from: a@example.org"
			if keys != "" {
				yaml += ", " + keys
			}
			yaml += "}\n"
			cfg, err := Load(strings.NewReader(yaml), "alertd.yaml")
			if err != nil {
				t.Fatal(err)
			}
			s := cfg.SMTP
			if s.Security != tc.security || s.Port != tc.port {
				t.Errorf("security %q port %d, want %q %d", s.Security, s.Port, tc.security, tc.port)
			}
			if s.Auth != "auto" || s.Timeout.D() != 30*time.Second || s.Retry.Initial.D() != 30*time.Second ||
				s.Retry.Max.D() != 10*time.Minute || s.Retry.GiveUpAfter.D() != 24*time.Hour {
				t.Errorf("auth %q timeout %s retry %+v", s.Auth, s.Timeout, s.Retry)
			}
		})
	}
}

func TestRelativePathsResolveAgainstTheFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets", "smtp"), []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // somewhere else: nothing may resolve against the working directory
	_, err := LoadFile(filepath.Join(dir, "alertd.yaml"))
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("a missing file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alertd.yaml"), []byte(`
mqtt:
  broker: ssl://broker.example.org:8883
  tls: {ca_file: ca.pem, cert_file: ../elsewhere/client.pem, key_file: /abs/client.key}
smtp:
  host: smtp.example.org
  from: a@example.org
  username: me
  password_file: secrets/smtp
  tls: {ca_file: ./smtp-ca.pem}
store: {path: data/alertd.db, spool: outbox-mail}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadFile(filepath.Join(dir, "alertd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ got, want string }{
		{cfg.MQTT.TLS.CAFile, filepath.Join(dir, "ca.pem")},
		{cfg.MQTT.TLS.CertFile, filepath.Join(filepath.Dir(dir), "elsewhere", "client.pem")},
		{cfg.MQTT.TLS.KeyFile, "/abs/client.key"},
		{cfg.SMTP.TLS.CAFile, filepath.Join(dir, "smtp-ca.pem")},
		{cfg.SMTP.PasswordFile, filepath.Join(dir, "secrets", "smtp")},
		{cfg.SMTP.Password.Reveal(), "pw"},
		{cfg.Store.Path, filepath.Join(dir, "data", "alertd.db")},
		{cfg.Store.Spool, filepath.Join(dir, "outbox-mail")},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("ALERTD_T_HOST", "mail.example.org")
	t.Setenv("ALERTD_T_PORT", "2525")
	t.Setenv("ALERTD_T_EMPTY", "")
	t.Setenv("ALERTD_T_USER", "me")
	unsetEnv(t, "ALERTD_T_UNSET")
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"${ALERTD_T_HOST}", "mail.example.org"},
		{"smtp.${ALERTD_T_HOST}:${ALERTD_T_PORT}", "smtp.mail.example.org:2525"},
		{"${ALERTD_T_UNSET:-fallback}", "fallback"},
		{"${ALERTD_T_UNSET:-}", ""},
		{"${ALERTD_T_EMPTY:-fallback}", "fallback"}, // like the shell: ":-" also replaces an empty value
		{"${ALERTD_T_EMPTY}", ""},                   // set but empty is not an error
		{"${ALERTD_T_HOST:-fallback}", "mail.example.org"},
		{"${ALERTD_T_UNSET:-a:-b}", "a:-b"},
		{"$${ALERTD_T_HOST}", "${ALERTD_T_HOST}"},
		{"{{.Value}} $${literal} ${ALERTD_T_USER}", "{{.Value}} ${literal} me"},
		{"$ALERTD_T_HOST and $5", "$ALERTD_T_HOST and $5"}, // only ${...} expands
		{"$$ stays", "$$ stays"},
	} {
		got, err := expand(tc.in, os.LookupEnv)
		if err != nil || got != tc.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"${ALERTD_T_UNSET}", "${", "x ${ALERTD_T_HOST", "${1X}", "${A B}", "${}", "${:-x}"} {
		if got, err := expand(in, os.LookupEnv); err == nil {
			t.Errorf("expand(%q) = %q, want an error", in, got)
		}
	}

	// Through Load: every kind of value expands, lists included.
	cfg, err := Load(strings.NewReader(`
smtp:
  host: ${ALERTD_T_HOST}
  port: ${ALERTD_T_PORT}
  username: ${ALERTD_T_USER}
  password: ${ALERTD_T_UNSET:-dev-password}
  from: "Alerts <alerts@${ALERTD_T_HOST}>"
  allow_insecure_auth: ${ALERTD_T_UNSET:-false}
defaults:
  to: ["${ALERTD_T_USER}@example.org"]
  cooldown: ${ALERTD_T_UNSET:-90s}
rules:
  - {name: hot, topic: "sensors/${ALERTD_T_USER}/+", above: "${ALERTD_T_PORT}", subject: "$${X} {{.Value}}"}
`), "alertd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, r := cfg.SMTP, cfg.Rules[0]
	if s.Host != "mail.example.org" || s.Port != 2525 || s.Username != "me" || s.Password.Reveal() != "dev-password" ||
		s.From != "Alerts <alerts@mail.example.org>" || s.AllowInsecureAuth {
		t.Errorf("smtp after expansion: %+v", s)
	}
	if r.To[0] != "me@example.org" || r.Cooldown.D() != 90*time.Second || r.Topic != "sensors/me/+" || *r.Above != 2525 || r.Subject != "${X} {{.Value}}" {
		t.Errorf("rule after expansion: %+v", r)
	}
}

// TestUnsetVariableIsPositioned: a missing secret stops the start, and the
// error says which variable and where.
func TestUnsetVariableIsPositioned(t *testing.T) {
	unsetEnv(t, "SMTP_PASSWORD")
	_, err := Load(strings.NewReader("smtp:\n  host: h\n  from: a@example.org\n  username: me\n  password: ${SMTP_PASSWORD}\n"), "alertd.yaml")
	want := "alertd.yaml:5:13: smtp.password: environment variable SMTP_PASSWORD is not set (write ${SMTP_PASSWORD:-} to allow it to be empty)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{"s3cret\n", "s3cret"},
		{"s3cret", "s3cret"},
		{"s3cret\r\n", "s3cret"},
		{"s3cret\n\n", "s3cret"},
		{"  pass with spaces \t\n", "  pass with spaces \t"}, // only the line ending is not part of it
		{"two\nlines\n", "two\nlines"},
	} {
		file := filepath.Join(dir, "pw")
		if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(strings.NewReader(`
mqtt: {broker: "ssl://b.example.org:8883", username: u, password_file: pw}
smtp: {host: h, from: a@example.org, username: u, password_file: "`+file+`"}
`), filepath.Join(dir, "alertd.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.MQTT.Password.Reveal() != tc.want || cfg.SMTP.Password.Reveal() != tc.want {
			t.Errorf("password_file %q: mqtt %q smtp %q, want %q", tc.content, cfg.MQTT.Password.Reveal(), cfg.SMTP.Password.Reveal(), tc.want)
		}
	}

	if err := os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(strings.NewReader("smtp:\n  host: h\n  from: a@example.org\n  username: u\n  password_file: empty\n"), filepath.Join(dir, "alertd.yaml"))
	want := filepath.Join(dir, "alertd.yaml") + ":5:18: smtp.password_file: " + filepath.Join(dir, "empty") + " is empty"
	if err == nil || err.Error() != want {
		t.Errorf("empty password_file:\n got %v\nwant %s", err, want)
	}

	_, err = Load(strings.NewReader("smtp:\n  host: h\n  from: a@example.org\n  username: u\n  password_file: nope\n"), filepath.Join(dir, "alertd.yaml"))
	want = filepath.Join(dir, "alertd.yaml") + ":5:18: smtp.password_file: cannot read " + filepath.Join(dir, "nope") + ": no such file or directory"
	if err == nil || err.Error() != want {
		t.Errorf("missing password_file:\n got %v\nwant %s", err, want)
	}
}

const secretValue = "hunter2-Zq9"

// TestSecretNeverPrints: however a Secret (or a config holding one) is
// formatted, encoded or logged, the value does not appear.
func TestSecretNeverPrints(t *testing.T) {
	s := NewSecret(secretValue)
	if s.Reveal() != secretValue {
		t.Fatal("Reveal must return the value")
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%t", "%c", "%U", "%10s", "%-20v", "%.3s"} {
		if got := fmt.Sprintf(verb, s); strings.Contains(got, secretValue) || strings.Contains(got, "hun") {
			t.Errorf("fmt %s shows the secret: %s", verb, got)
		}
	}
	if got := fmt.Sprintf("%v|%s|%#v", s, s, s); got != `<secret>|<secret>|"<secret>"` {
		t.Errorf("fmt of a Secret = %s", got)
	}
	if got := fmt.Sprint(Secret{}, NewSecret("")); got != " " {
		t.Errorf("an empty secret prints %q, want nothing (so that \"not set\" is visible)", got)
	}

	cfg, err := Load(strings.NewReader(`
mqtt: {broker: "ssl://b.example.org:8883", username: u, password: `+secretValue+`}
smtp: {host: h, from: a@example.org, username: u, password: `+secretValue+`}
`), "alertd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var shown []string
	// %s and %d matter: fmt prints the nested *SMTP under them as a "bad
	// verb", with every method (Secret's included) switched off.
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%q"} {
		shown = append(shown, fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, *cfg), fmt.Sprintf(verb, cfg.SMTP),
			fmt.Sprintf(verb, *cfg.SMTP), fmt.Sprintf(verb, cfg.MQTT), fmt.Sprintf(verb, []any{cfg}))
	}
	if got := fmt.Sprintf("%v", cfg.SMTP); !strings.HasPrefix(got, "&{h 587 starttls auto u <secret> ") {
		t.Errorf("%%v of the smtp section = %s", got)
	}
	if got := fmt.Sprintf("%+v", Config{}); !strings.Contains(got, "SMTP:<nil>") {
		t.Errorf("%%+v of a config without smtp = %s", got)
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	shown = append(shown, string(js))
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "smtp", cfg.SMTP, "password", cfg.SMTP.Password, "mqtt", cfg.MQTT)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "smtp", cfg.SMTP, "password", cfg.SMTP.Password)
	shown = append(shown, logs.String())
	for _, out := range shown {
		if strings.Contains(out, secretValue) {
			t.Errorf("the password shows in:\n%s", out)
		}
	}
	var decoded struct{ MQTT, SMTP struct{ Password string } }
	if err := json.Unmarshal(js, &decoded); err != nil || decoded.SMTP.Password != Redacted || decoded.MQTT.Password != Redacted {
		t.Errorf("json shows no placeholder: %s (%v)", js, err)
	}
}

// TestErrorsNeverShowSecrets: a password that is not valid config text is
// reported without quoting it.
func TestErrorsNeverShowSecrets(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(secretValue+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, yaml := range []string{
		"smtp: {host: h, from: a@example.org, username: u, password: \"" + secretValue + "${oops\"}\n",
		"smtp: {host: h, from: a@example.org, username: u, password: \"" + secretValue + "${bad name}\"}\n",
		"smtp: {host: h, from: a@example.org, username: u, password: [" + secretValue + "]}\n",
		"smtp: {host: h, from: a@example.org, username: u, password: x, password_file: " + pwFile + "}\n",
		"smtp: {host: h, from: a@example.org, security: none, username: u, password_file: " + pwFile + "}\n",
		"mqtt: {password: " + secretValue + "}\n",
	} {
		_, err := Load(strings.NewReader(yaml), "alertd.yaml")
		if err == nil {
			t.Errorf("no error for %s", yaml)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error shows the password:\n%v", err)
		}
	}
}

func TestEmptyFileIsTheEmbeddedDefault(t *testing.T) {
	// Load documents this: an empty file (or one with only comments)
	// runs the embedded broker with no rules. app warns about no rules.
	for _, in := range []string{"", "\n\n", "# only a comment\n", "---\n", "~\n"} {
		cfg, err := Load(strings.NewReader(in), "empty.yaml")
		if err != nil {
			t.Errorf("Load(%q): %v", in, err)
			continue
		}
		if cfg.MQTT.Listen != DefaultListen || len(cfg.Rules) != 0 {
			t.Errorf("Load(%q) = %+v", in, cfg)
		}
	}
}

// loadWithin runs Load and fails the test if it takes longer than limit,
// so a hostile file shows up as a failure, not a hung test run.
func loadWithin(t *testing.T, limit time.Duration, data []byte) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := Load(bytes.NewReader(data), "hostile.yaml")
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("Load did not return within %s", limit)
		return nil
	}
}

func TestHostileYAML(t *testing.T) {
	// Billion laughs: nine levels of nine aliases, 9^9 strings if expanded,
	// referenced where the schema expects a list of strings and rules.
	var lol strings.Builder
	lol.WriteString(`l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]` + "\n")
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&lol, "l%d: &l%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d,", i-1), 9), ","))
	}
	lol.WriteString("defaults: {to: *l8}\nrules: *l8\n")

	// Aliases that are valid where they are used: every rule is the same
	// mapping, whose recipients are 5000 aliases of one address list.
	var wide strings.Builder
	wide.WriteString("defaults: {to: &to [" + strings.TrimSuffix(strings.Repeat("a@example.org,", 5000), ",") + "]}\n")
	wide.WriteString("rules: [&r {name: x, topic: a, above: 1, to: *to}" + strings.Repeat(", *r", 9999) + "]\n")

	// One mapping of many unknown keys repeated through aliases.
	var keys strings.Builder
	keys.WriteString("defaults: &m {")
	for i := range 2000 {
		fmt.Fprintf(&keys, "k%d: 1, ", i)
	}
	keys.WriteString("}\nrules: [" + strings.TrimSuffix(strings.Repeat("*m,", 2000), ",") + "]\n")

	tooBig := bytes.Repeat([]byte("# padding\n"), MaxFileSize/10+1)
	manyRules := "rules: [" + strings.TrimSuffix(strings.Repeat("{},", maxItems+1), ",") + "]\n"
	deep := "rules: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n"

	for _, tc := range []struct {
		name, yaml string
		want       string // a part of the error
	}{
		{"billion laughs", lol.String(), "defaults.to[0]: expected a single value, found a list"},
		{"billion laughs as rules", lol.String(), "rules[0]: expected a mapping of keys, found a list"},
		{"aliases multiply valid work", wide.String(), "document too large or too many aliases"},
		{"aliases multiply errors", keys.String(), fmt.Sprintf("too many errors (more than %d)", MaxErrors)},
		{"larger than MaxFileSize", string(tooBig), fmt.Sprintf("larger than %d bytes", MaxFileSize)},
		{"too many rules", manyRules, fmt.Sprintf("hostile.yaml:1:8: rules: more than %d items", maxItems)},
		{"deep nesting", deep, "hostile.yaml:1:1: YAML syntax: exceeded max depth"},
		{"tab indentation", "mqtt:\n\tbroker: tcp://b:1883\n", "hostile.yaml:2:1: YAML syntax: found character that cannot start any token"},
		{"top level list", "- a\n- b\n", "hostile.yaml:1:1: the configuration must be a mapping"},
		{"top level number", "42\n", "hostile.yaml:1:1: the configuration must be a mapping"},
		{"NUL byte", "mqtt:\n  broker: \x00\n", "YAML syntax"},
		{"invalid UTF-8", "mqtt:\n  broker: \xff\xfe\n", "YAML syntax"},
		{"recursive alias", "rules: &r [*r]\ndefaults: {to: &t [*t]}\n", "hostile.yaml:1:8: rules[0]: expected a mapping of keys, found a list"},
		{"binary", "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "YAML syntax"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadWithin(t, 30*time.Second, []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %.500v\nwant an error containing %q", err, tc.want)
			}
			var errs Errors
			if errors.As(err, &errs) && len(errs) > MaxErrors+1 {
				t.Errorf("%d errors: more than MaxErrors", len(errs))
			}
		})
	}
}

// TestErrorsInFileOrder: however many passes find them, errors come out
// sorted by position, so a user fixes the file top to bottom.
func TestErrorsInFileOrder(t *testing.T) {
	_, err := Load(strings.NewReader(`rules:
  - {name: a, topic: "a/#/b", above: 1, to: [x@example.org]}
log: {level: loud}
mqtt: {qoss: 1}
`), "f.yaml")
	want := `f.yaml:2:22: rule "a": invalid topic filter "a/#/b": "#" must be the last level of a filter
f.yaml:3:14: log.level: "loud" is not one of debug, info, warn, error
f.yaml:4:8: unknown key "qoss" in mqtt (did you mean "qos"?)`
	if err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
}

var positioned = regexp.MustCompile(`^[^:]+:\d+:\d+: `)

// TestErrorLines: an Error prints as FILE:LINE:COL: message, and a reader
// without a name is still named.
func TestErrorLines(t *testing.T) {
	var errs Errors
	errs.Add("a.yaml", Pos{3, 7}, "bad %s", "thing")
	errs.Add("", Pos{1, 1}, "also")
	if got := errs.Error(); got != "a.yaml:3:7: bad thing\n<config>:1:1: also" {
		t.Errorf("Errors.Error() = %q", got)
	}
	for _, e := range errs {
		if !positioned.MatchString(e.Error()) {
			t.Errorf("%q is not FILE:LINE:COL: message", e)
		}
	}
	if (Errors{}).Err() != nil || errs.Err() == nil {
		t.Error("Err must be nil exactly when there is no error")
	}
}
