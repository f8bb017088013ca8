// Package topic holds MQTT topic names and filters as MQTT 3.1.1 defines
// them (section 4.7): levels separated by '/', '+' matching exactly one
// level, '#' matching the rest, and topics starting with '$' hidden from
// filters that start with a wildcard.
package topic

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen is the longest topic MQTT can carry (a 16-bit length prefix).
const MaxLen = 65535

// ValidateFilter reports why f is not a usable subscription filter.
func ValidateFilter(f string) error {
	if err := validateCommon(f); err != nil {
		return err
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return errors.New(`"#" must be the last level of a filter`) // [MQTT-4.7.1-2]
		case l != "#" && strings.Contains(l, "#"):
			return fmt.Errorf(`"#" must be a whole level, not part of %q`, l) // [MQTT-4.7.1-2]
		case l != "+" && strings.Contains(l, "+"):
			return fmt.Errorf(`"+" must be a whole level, not part of %q`, l) // [MQTT-4.7.1-3]
		}
	}
	return nil
}

// ValidateName reports why t is not a topic a message can be published on.
func ValidateName(t string) error {
	if err := validateCommon(t); err != nil {
		return err
	}
	if strings.ContainsAny(t, "+#") {
		return errors.New("a topic name must not contain wildcards") // [MQTT-4.7.3-1]
	}
	return nil
}

func validateCommon(s string) error {
	switch {
	case s == "":
		return errors.New("topic must not be empty") // [MQTT-4.7.3-1]
	case len(s) > MaxLen:
		return fmt.Errorf("topic longer than %d bytes", MaxLen)
	case !utf8.ValidString(s):
		return errors.New("topic is not valid UTF-8")
	case strings.ContainsRune(s, 0):
		return errors.New("topic must not contain NUL") // [MQTT-4.7.3-2]
	}
	return nil
}

// Wildcards returns the parts of name matched by filter's '+' levels and
// its trailing '#' (joined with '/'), in order, and whether it matched.
func Wildcards(filter, name string) ([]string, bool) {
	var out []string
	if strings.HasPrefix(name, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return nil, false // [MQTT-4.7.2-1]
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return append(out, name), true
		}
		nl, nrest, nmore := strings.Cut(name, "/")
		switch {
		case fl == "+":
			out = append(out, nl)
		case fl != nl:
			return nil, false
		}
		if !fmore || !nmore {
			if fmore && frest == "#" { // "a/#" matches "a" [MQTT-4.7.1-2]
				return append(out, ""), true
			}
			return out, fmore == nmore
		}
		filter, name = frest, nrest
	}
}

// Matches reports whether name is matched by filter.
func Matches(filter, name string) bool {
	_, ok := Wildcards(filter, name)
	return ok
}
