package config

import (
	"strings"
	"testing"
)

// TestIndentationErrorIsAtTheBadLine: wherever yaml says it gave up, the
// error points at the line whose indentation is wrong, blank lines and
// comments around it or not; other syntax errors keep yaml's position.
func TestIndentationErrorIsAtTheBadLine(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       string // LINE:COL: and the start of the message
	}{
		{"key too far left after comments", "mqtt:\n  broker: tcp://b:1883\n# about smtp\n# more\n smtp: {}\n",
			"5:2: YAML syntax: did not find expected key (check the indentation"},
		{"key too far right after a comment", "a:\n  b: 1\n  # x\n   c: 2\n", "4:4: YAML syntax: did not find expected key"},
		{"list item out of line", "rules:\n  - name: a\n\n    # comment\n\n   field: x\n", "6:4: YAML syntax: did not find expected '-' indicator"},
		{"list item too far left", "defaults:\n  to:\n    - a@example.org\n  # x\n   - b@example.org\n", "5:4: YAML syntax: did not find expected key"},
		{"key too far right", "a:\n  b: 1\n   c: 2\n", "3:4: YAML syntax: mapping values are not allowed in this context (a key indented deeper"},
		{"unquoted colon", "rules:\n  - subject: Alert: hot\n", "2:3: YAML syntax: mapping values are not allowed in this context (a key indented deeper than the one above it, or a value with \": \" in it that needs quotes)"},
		{"unclosed list", "a: [1,\n  2\nb: 3\n", "2:1: YAML syntax: did not find expected ',' or ']'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := loadErrors(t, "f.yaml", []byte(tc.yaml))
			if len(got) != 1 || !strings.HasPrefix(got[0], tc.want) {
				t.Errorf("got %q, want one error starting %q", got, tc.want)
			}
		})
	}
}
