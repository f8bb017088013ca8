package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tryConfig is a configuration whose broker and mail server do not exist:
// `alertd test` must need neither, nor its store.
func tryConfig(t *testing.T) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(`mqtt: {broker: "tcp://127.0.0.1:%d"}
smtp:
  host: 127.0.0.1
  port: %d
  from: "Invernadero <alerts@example.org>"
store: {path: state/alertd.db}
defaults: {to: ["Ops <ops@example.org>"]}
rules:
  - name: greenhouse-hot
    topic: "sensors/+/telemetry"
    field: temp
    above: 30
    hysteresis: 1.5
    for: 2m
    cooldown: 10m
    subject: "Temperatura alta en {{.Device}}: {{.Value}} °C"
  - name: door
    topic: "doors/+"
    equals: open
`, closedPort(t), closedPort(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

// inOrder fails unless every want is in out, in this order.
func inOrder(t *testing.T, out string, want ...string) {
	t.Helper()
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("output lacks %q (in order) in:\n%s", w, out)
		}
		rest = rest[i+len(w):]
	}
}

// TestTestShowsTheVerdictAndTheMail: one reading: which rules watch the
// topic, what the rule read, its condition's verdict, the alert's new
// state and the mail as it would be queued — and no broker, mail server
// or store was needed or touched.
func TestTestShowsTheVerdictAndTheMail(t *testing.T) {
	config, dir := tryConfig(t)
	payload := filepath.Join(dir, "reading.json")
	if err := os.WriteFile(payload, []byte(`{"temp": 31.5, "hum": 40}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]string{"inline": `{"temp": 31.5, "hum": 40}`, "from a file": "@" + payload} {
		t.Run(name, func(t *testing.T) {
			r := alertd(t, nil, "test", "-config", config, "-topic", "sensors/salon/telemetry", "-payload", p, "-at", "2026-05-01T12:00:00Z", "-every", "3m", "-payload", p)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("exit %d\nstderr: %s", r.code, r.stderr)
			}
			inOrder(t, r.stdout,
				"2026-05-01 12:00:00 UTC  sensors/salon/telemetry  {\"temp\": 31.5, \"hum\": 40}\n",
				"  rule \"greenhouse-hot\" (topic sensors/+/telemetry) matches\n",
				"    value: temp = 31.5\n",
				"    condition: above 30 → holds\n",
				"    alert: ok → pending: fires at 2026-05-01 12:02:00 UTC if it still holds then (for 2m)\n",
				"  not watching this topic: door (doors/+)\n",
				"2026-05-01 12:02:00 UTC  (no reading)  rule \"greenhouse-hot\" on sensors/salon/telemetry: the condition held for 2m (for)\n",
				"    alert: pending → firing\n",
				"    mail: queued now:\n",
				"      | From: \"Invernadero\" <alerts@example.org>\n",
				"      | To: \"Ops\" <ops@example.org>\n",
				"      | Subject: Temperatura alta en salon: 31.5 °C\n",
				"      | Date: Fri, 01 May 2026 12:02:00 +0000\n",
				"      | X-Alertd-Rule: greenhouse-hot\n",
				"      | Firing: greenhouse-hot (warning) on sensors/salon/telemetry.\n",
				"      | Value:      temp = 31.5 (threshold 30)\n",
				"2026-05-01 12:03:00 UTC  sensors/salon/telemetry",
				"    alert: still firing (since 2026-05-01 12:00:00 UTC); no new mail\n",
				"after the last reading:\n",
				"  rule \"greenhouse-hot\" on sensors/salon/telemetry: firing since 2026-05-01 12:00:00 UTC\n",
			)
			if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
				t.Errorf("the store directory was touched: %v", err)
			}
		})
	}
}

// TestTestSequenceShowsTheStateMachine: a file of readings walks an alert
// through pending, firing, hysteresis and resolved, then fires again
// within the cooldown: that mail is held back and goes out when the
// cooldown ends, saying so; a payload the rule cannot read is named.
func TestTestSequenceShowsTheStateMachine(t *testing.T) {
	config, dir := tryConfig(t)
	events := filepath.Join(dir, "readings.txt")
	if err := os.WriteFile(events, []byte(`# a hot spell
12:00 sensors/salon/telemetry {"temp": 31.5}
+1m sensors/salon/telemetry {"temp": 32}
+2m sensors/salon/telemetry {"temp": 29.5}
+1m sensors/salon/telemetry {"temp": 27}
+1m sensors/salon/telemetry {"temp": 33}
+3m sensors/salon/telemetry not json
+10m doors/front closed
`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := alertd(t, nil, "test", "-config", config, "-events", events, "-at", "2026-05-01T12:00:00Z")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d\nstderr: %s", r.code, r.stderr)
	}
	inOrder(t, r.stdout,
		"12:00:00 UTC  sensors/salon/telemetry", "alert: ok → pending",
		"12:01:00 UTC  sensors/salon/telemetry", "alert: pending since 2026-05-01 12:00:00 UTC",
		"12:02:00 UTC  (no reading)", "alert: pending → firing", "mail: queued now:", "| Subject: Temperatura alta en salon: 32 °C",
		"12:03:00 UTC", "condition: above 30 → does not hold, but a firing alert clears only below 28.5 (hysteresis)", "alert: still firing",
		"12:04:00 UTC", "condition: above 30 → does not hold", "alert: firing → ok (resolved after 4m)", "mail: queued now:",
		"| Subject: Re: Temperatura alta en salon: 32 °C", "| In-Reply-To: <20260501T120200", "Resolved: greenhouse-hot",
		"12:05:00 UTC", "alert: ok → pending",
		"12:07:00 UTC  (no reading)", "alert: pending → firing",
		"mail: held back by the cooldown (10m) of this series until 2026-05-01 12:12:00 UTC; tried again then if still firing",
		"12:08:00 UTC  sensors/salon/telemetry  not json", "cannot use the payload: payload is not JSON (field temp); the reading is ignored for this rule",
		"12:12:00 UTC  (no reading)  rule \"greenhouse-hot\" on sensors/salon/telemetry: the cooldown that held back the first mail is over",
		"alert: still firing: the first mail, held back before, is tried again",
		"mail: queued now (it says 1 mail(s) of this rule were held back since its last one):", "| Held back:  1 notification(s)",
		"12:18:00 UTC  doors/front  closed", "rule \"door\" (topic doors/+) matches", "condition: equals \"open\" → does not hold", "alert: ok",
	)
	if n := strings.Count(r.stdout, "mail: queued now"); n != 3 {
		t.Errorf("%d mails queued, want 3 (firing, resolved, the held-back firing)", n)
	}
}

// TestTestRawShowsTheMailAsQueued: -raw prints the bytes the outbox would
// hold, RFC 2047 subject and quoted-printable body.
func TestTestRawShowsTheMailAsQueued(t *testing.T) {
	config, _ := tryConfig(t)
	r := alertd(t, nil, "test", "-config", config, "-topic", "sensors/salon/telemetry", "-payload", `{"temp": 31.5}`, "-payload", `{"temp": 31.5}`, "-every", "2m", "-raw")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"      | Content-Transfer-Encoding: quoted-printable\n",
		"      | Subject: =?utf-8?q?Temperatura_alta_en_salon:_31.5_=C2=B0C?=\n", "      | Mime-Version: 1.0\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("-raw output lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestTestErrorsExit2(t *testing.T) {
	config, dir := tryConfig(t)
	badEvents := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(badEvents, []byte("12:00 a/b 1\n11:00 a/b 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string // the start of stderr
	}{
		{[]string{"-config", "testdata/bad.yaml", "-topic", "a", "-payload", "1"}, "testdata/bad.yaml:14:3: unknown key \"brokr\""},
		{[]string{"-config", config, "-payload", "1"}, "alertd test: give -topic T and -payload P (or -events FILE)"},
		{[]string{"-config", config, "-topic", "a", "-payload", "@" + filepath.Join(dir, "missing.json")}, "alertd test: -payload: payload: open "},
		{[]string{"-config", config, "-events", badEvents}, "alertd test: " + badEvents + ":2: "},
		{[]string{"-config", config, "-topic", "a", "-payload", "1", "-at", "noon"}, "alertd test: -at: \"noon\" is not a time"},
	} {
		r := alertd(t, []string{"SMTP_PASSWORD=x"}, append([]string{"test"}, tc.args...)...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("alertd test %q: exit %d\nstdout: %s\nstderr: %s\nwant exit 2 and stderr starting %q", tc.args, r.code, r.stdout, r.stderr, tc.want)
		}
	}
}
