package topic

import (
	"slices"
	"strings"
	"testing"
)

func TestValidateFilter(t *testing.T) {
	for _, tc := range []struct {
		filter string
		err    string // "" when valid, else a part of the message
	}{
		{"sensors/+/telemetry", ""},
		{"sensors/#", ""},
		{"#", ""},
		{"+", ""},
		{"+/+", ""},
		{"/+", ""},
		{"+/tennis/#", ""},      // [MQTT-4.7.1-3] example
		{"sport/+/player1", ""}, // [MQTT-4.7.1-3] example
		{"a//b", ""},            // empty levels are levels [MQTT-4.7.3-1]
		{"/", ""},               // two empty levels
		{"/finance", ""},        // a leading empty level
		{"$SYS/#", ""},          // $ topics can be subscribed to explicitly
		{"homeassistant/binary_sensor/+/state", ""},
		{"sensors/ñandú/+", ""}, // UTF-8 is fine
		{"a b/c", ""},           // spaces are allowed

		{"", "must not be empty"},                                             // [MQTT-4.7.3-1]
		{"sport/tennis/#/ranking", `"#" must be the last level`},              // [MQTT-4.7.1-2]
		{"#/", `"#" must be the last level`},                                  // "#" then an empty level
		{"sport/tennis#", `"#" must be a whole level, not part of "tennis#"`}, // [MQTT-4.7.1-2]
		{"##", `"#" must be a whole level`},
		{"sport+", `"+" must be a whole level, not part of "sport+"`}, // [MQTT-4.7.1-3]
		{"sport/+player1", `"+" must be a whole level`},
		{"++", `"+" must be a whole level`},
		{"a/+#", "must be a whole level"},
		{"a/\x00/b", "must not contain NUL"},  // [MQTT-4.7.3-2]
		{"a/\xff/b", "not valid UTF-8"},       // [MQTT-1.5.3-1]
		{"a/\xed\xa0\x80", "not valid UTF-8"}, // a UTF-16 surrogate encoded as UTF-8 [MQTT-1.5.3-1]
		{strings.Repeat("a", MaxLen+1), "longer than 65535 bytes"},
	} {
		err := ValidateFilter(tc.filter)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ValidateFilter(%.40q) = %v, want valid", tc.filter, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ValidateFilter(%.40q) = %v, want an error containing %q", tc.filter, err, tc.err)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  string
	}{
		{"sensors/greenhouse/telemetry", ""},
		{"/", ""},
		{"a//b", ""},
		{"$SYS/broker/uptime", ""},
		{"devices/esp32-ñ/status", ""},

		{"", "must not be empty"},
		{"sensors/+/telemetry", "must not contain wildcards"}, // [MQTT-3.3.2-2]
		{"sensors/#", "must not contain wildcards"},
		{"a+b", "must not contain wildcards"},
		{"a\x00b", "must not contain NUL"},
		{"\xc3\x28", "not valid UTF-8"},
		{strings.Repeat("x", MaxLen+1), "longer than"},
	} {
		err := ValidateName(tc.name)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ValidateName(%.40q) = %v, want valid", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ValidateName(%.40q) = %v, want an error containing %q", tc.name, err, tc.err)
		}
	}
}

// TestMaxLen: a topic is carried with a 16-bit length prefix, so 65535
// bytes fit and 65536 do not. The limit is in bytes, not characters.
func TestMaxLen(t *testing.T) {
	longest := strings.Repeat("a", MaxLen)
	if err := ValidateName(longest); err != nil {
		t.Errorf("a %d-byte name: %v", MaxLen, err)
	}
	if err := ValidateFilter(longest[:MaxLen-2] + "/#"); err != nil {
		t.Errorf("a %d-byte filter: %v", MaxLen, err)
	}
	if err := ValidateName(longest + "a"); err == nil {
		t.Error("a 65536-byte name was accepted")
	}
	// 21846 three-byte characters are 65538 bytes.
	if err := ValidateName(strings.Repeat("€", MaxLen/3+1)); err == nil {
		t.Error("a name of 65538 bytes in 21846 characters was accepted")
	}
	if !Matches(longest[:MaxLen-2]+"/#", longest[:MaxLen-2]+"/x") {
		t.Error("a long filter does not match")
	}
}

func TestWildcards(t *testing.T) {
	for _, tc := range []struct {
		filter, name string
		match        bool
		wild         []string
	}{
		// Exact levels.
		{"a/b", "a/b", true, nil},
		{"a/b", "a/c", false, nil},
		{"a/b", "a", false, nil},
		{"a", "a/b", false, nil},
		{"a/b", "a/b/", false, nil},
		{"A/b", "a/b", false, nil}, // case-sensitive
		{"a//b", "a//b", true, nil},
		{"a//b", "a/b", false, nil},

		// "+" matches exactly one level, possibly empty [MQTT-4.7.1-3].
		{"sport/tennis/+", "sport/tennis/player1", true, []string{"player1"}},
		{"sport/tennis/+", "sport/tennis/player1/ranking", false, nil},
		{"sport/+", "sport", false, nil},
		{"sport/+", "sport/", true, []string{""}},
		{"+/+", "/finance", true, []string{"", "finance"}},
		{"/+", "/finance", true, []string{"finance"}},
		{"+", "/finance", false, nil},
		{"+", "finance", true, []string{"finance"}},
		{"sensors/+/telemetry", "sensors/greenhouse/telemetry", true, []string{"greenhouse"}},
		{"sensors/+/telemetry", "sensors/greenhouse/status", false, nil},
		{"+/+/c", "a/b/c", true, []string{"a", "b"}},

		// "#" matches the parent and any number of levels [MQTT-4.7.1-2].
		{"sport/#", "sport", true, []string{""}},
		{"sport/#", "sport/", true, []string{""}},
		{"sport/#", "sport/tennis/player1", true, []string{"tennis/player1"}},
		{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true, []string{"score/wimbledon"}},
		{"sport/#", "sports", false, nil},
		{"sport/#", "spor", false, nil},
		{"#", "a/b/c", true, []string{"a/b/c"}},
		{"#", "/", true, []string{"/"}},
		{"/#", "/", true, []string{""}},
		{"+/#", "a", true, []string{"a", ""}},
		{"+/#", "a/b/c", true, []string{"a", "b/c"}},
		{"a/+/#", "a/b", true, []string{"b", ""}},
		{"a/+/#", "a", false, nil},

		// Topics starting with "$" are not matched by a filter starting
		// with a wildcard [MQTT-4.7.2-1], but are by one naming them.
		{"#", "$SYS/broker/uptime", false, nil},
		{"+/broker/uptime", "$SYS/broker/uptime", false, nil},
		{"+/#", "$SYS/x", false, nil},
		{"+", "$SYS", false, nil},
		{"$SYS/#", "$SYS/broker/uptime", true, []string{"broker/uptime"}},
		{"$SYS/+/uptime", "$SYS/broker/uptime", true, []string{"broker"}},
		{"$SYS", "$SYS", true, nil},
		{"a/#", "a/$SYS", true, []string{"$SYS"}}, // only the first level is special
		{"+/$x", "a/$x", true, []string{"a"}},
	} {
		wild, ok := Wildcards(tc.filter, tc.name)
		if ok != tc.match || (ok && !slices.Equal(wild, tc.wild)) {
			t.Errorf("Wildcards(%q, %q) = %q, %v; want %q, %v", tc.filter, tc.name, wild, ok, tc.wild, tc.match)
		}
		if Matches(tc.filter, tc.name) != tc.match {
			t.Errorf("Matches(%q, %q) = %v, want %v", tc.filter, tc.name, !tc.match, tc.match)
		}
	}
}

// TestMatchesAgreesWithLevels checks Matches against a plain level-by-level
// reading of the spec, over every pair from a set of filters and names.
func TestMatchesAgreesWithLevels(t *testing.T) {
	filters := []string{"#", "+", "/", "/#", "+/#", "+/+", "a", "a/#", "a/+", "a/b", "a/+/c", "a//c", "a/+/#", "+/b/#", "$SYS/#", "$SYS/+", "a/b/c/#"}
	names := []string{"a", "b", "/", "//", "a/", "/a", "a/b", "a/b/c", "a//c", "a/x/c", "a/b/c/d", "$SYS", "$SYS/x", "$SYS/x/y", "x/b/y", "a/$b"}
	for _, f := range filters {
		if err := ValidateFilter(f); err != nil {
			t.Fatalf("filter %q: %v", f, err)
		}
		for _, n := range names {
			if got, want := Matches(f, n), matchLevels(f, n); got != want {
				t.Errorf("Matches(%q, %q) = %v, want %v", f, n, got, want)
			}
		}
	}
}

func matchLevels(filter, name string) bool {
	if strings.HasPrefix(name, "$") && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	fl, nl := strings.Split(filter, "/"), strings.Split(name, "/")
	for i, f := range fl {
		if f == "#" {
			return true // the parent level included: len(nl) may be i
		}
		if i >= len(nl) || (f != "+" && f != nl[i]) {
			return false
		}
	}
	return len(fl) == len(nl)
}
