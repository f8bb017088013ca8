package config

import (
	"fmt"
	"strings"
	"testing"
)

func TestUnreloadableNamesWhatARestartNeeds(t *testing.T) {
	base := `mqtt: {broker: "tcp://127.0.0.1:1883"}
smtp:
  host: smtp.example.org
  password: old
  from: "alertd <a@example.org>"
store: {path: /var/lib/alertd/alertd.db}
log: {level: info}
rules:
  - {name: hot, topic: "s/+", field: temp, above: 30, to: [ops@example.org]}
`
	load := func(t *testing.T, yaml string) *Config {
		t.Helper()
		c, err := Load(strings.NewReader(yaml), "alertd.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	running := load(t, base)
	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"rules and log level reload live", "above: 30", "above: 40", ""},
		{"log level", "level: info", "level: debug", ""},
		{"store path", "/var/lib/alertd/alertd.db", "/tmp/other.db", "alertd.yaml:6:15: store.path changed"},
		{"broker", "127.0.0.1:1883", "127.0.0.2:1883", "alertd.yaml:1:16: mqtt.broker changed"},
		{"smtp password, never shown", "password: old", "password: new", "alertd.yaml:4:13: smtp.password changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := Unreloadable(running, load(t, strings.Replace(base, tc.from, tc.to, 1)))
			got := errs.Error()
			switch {
			case tc.want == "" && len(errs) != 0:
				t.Fatalf("refused: %v", errs)
			case tc.want != "" && !strings.HasPrefix(got, tc.want):
				t.Fatalf("got %q, want it to start with %q", got, tc.want)
			case strings.Contains(got, "old") || strings.Contains(got, "new"):
				t.Fatalf("the error shows a secret: %q", got)
			}
		})
	}
}

func TestRuleChangesByName(t *testing.T) {
	load := func(yaml string) *Config {
		c, err := Load(strings.NewReader(yaml), "alertd.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	running := load(`defaults: {to: [ops@example.org]}
rules:
  - {name: hot, topic: "s/+", field: temp, above: 30}
  - {name: wet, topic: "s/+", field: hum, above: 90}
  - {name: gone, topic: "g/+", field: x, above: 1}
`)
	next := load(`# a comment moves every line
defaults: {to: [ops@example.org]}
rules:
  - {name: wet, topic: "s/+", field: hum, above: 95}
  - {name: hot, topic: "s/+", field: temp, above: 30}
  - {name: new, topic: "n/+", field: x, above: 1}
`)
	added, removed, changed := RuleChanges(running, next)
	if fmt.Sprint(added, removed, changed) != "[new] [gone] [wet]" {
		t.Fatalf("added %v removed %v changed %v; want [new] [gone] [wet]", added, removed, changed)
	}
}
