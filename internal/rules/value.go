package rules

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/alertd/alertd/internal/payload"
)

// Limits on what a payload may be before a rule looks at it. Sensor
// payloads are a few hundred bytes; anything far beyond is hostile or broken.
const (
	MaxPayload = payload.MaxBytes
	MaxDepth   = payload.MaxDepth
)

// Kind is the JSON type of an extracted value.
type Kind uint8

const (
	KindText Kind = iota // a raw payload or a JSON string
	KindNumber
	KindBool
	KindNull
)

// Value is what a rule compares: the text as written, and the number when
// the text is one (a JSON number, or a string holding a plain decimal number,
// since many devices publish "21.5").
type Value struct {
	Text  string
	Num   float64
	IsNum bool
	Kind  Kind
}

// Reasons a payload is not valid for a rule. They label metrics and logs.
var (
	ErrTooLarge      = errors.New("payload too large")
	ErrBadUTF8       = errors.New("payload is not valid UTF-8")
	ErrNotJSON       = errors.New("payload is not JSON")
	ErrTooDeep       = errors.New("payload nested too deeply")
	ErrNotObject     = errors.New("payload is not a JSON object")
	ErrFieldMissing  = errors.New("field missing")
	ErrFieldNotValue = errors.New("field is an object or a list")
	ErrNotNumber     = errors.New("value is not a number")
	ErrNotFinite     = errors.New("value is NaN or infinite")
)

// Reason is err's label value in alertd_payload_invalid_total:
// too_large, bad_utf8, not_json, too_deep, not_object, field_not_value,
// not_number, not_finite, field_missing, or expression (a when: that could
// not be evaluated on this payload).
func Reason(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{
		{ErrTooLarge, "too_large"}, {ErrBadUTF8, "bad_utf8"}, {ErrNotJSON, "not_json"}, {ErrTooDeep, "too_deep"},
		{ErrNotObject, "not_object"}, {ErrFieldMissing, "field_missing"}, {ErrFieldNotValue, "field_not_value"},
		{ErrNotNumber, "not_number"}, {ErrNotFinite, "not_finite"},
	} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "expression"
}

// checkPayload applies the limits every rule shares.
func checkPayload(p []byte) error {
	switch {
	case len(p) > MaxPayload:
		return ErrTooLarge
	case !utf8.Valid(p):
		return ErrBadUTF8
	}
	return nil
}

// extract finds path in a JSON payload. path is the field split on '.';
// a numeric segment indexes a list. The payload has passed checkPayload.
func extract(p []byte, path []string) (Value, error) {
	if len(path) == 0 {
		return rawValue(p), nil
	}
	if err := checkJSON(p); err != nil {
		return Value{}, err
	}
	return field(p, path)
}

// checkJSON says whether p is JSON alertd reads fields from: not nested
// too deep, and valid. Evaluate checks a payload once for all the rules
// that read fields of it.
func checkJSON(p []byte) error {
	if payload.Depth(p) > MaxDepth {
		return ErrTooDeep
	}
	if !json.Valid(p) {
		return ErrNotJSON
	}
	return nil
}

// field finds path (not empty) in p, which has passed checkJSON.
func field(p []byte, path []string) (Value, error) {
	s := scanner{p: p}
	s.space()
	if s.peek() != '{' {
		return Value{}, ErrNotObject
	}
	for _, seg := range path {
		if !s.enter(seg) {
			return Value{}, ErrFieldMissing
		}
	}
	return s.value()
}

// rawValue is the whole payload as the value (no field set).
func rawValue(p []byte) Value {
	text := strings.TrimSpace(string(p))
	v := Value{Text: text, Kind: KindText}
	v.Num, v.IsNum = parseNumber(text)
	return v
}

// parseNumber accepts JSON number syntax only: ParseFloat alone would take
// "0x1p3", "Inf" and "1_000", which no sensor means as a reading.
func parseNumber(s string) (float64, bool) {
	if !isJSONNumber(s) {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

func isJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	start := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == start || (s[start] == '0' && i-start > 1) {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		f := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == f {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		e := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == e {
			return false
		}
	}
	return i == len(s)
}

// scanner walks JSON already known to be valid, without allocating.
type scanner struct {
	p []byte
	i int
}

func (s *scanner) peek() byte {
	if s.i < len(s.p) {
		return s.p[s.i]
	}
	return 0
}

func (s *scanner) space() {
	for s.i < len(s.p) {
		switch s.p[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// enter moves to the value of key seg in the current object, or of index
// seg in the current list. The last duplicate key wins, as in encoding/json.
func (s *scanner) enter(seg string) bool {
	s.space()
	switch s.peek() {
	case '{':
		found := -1
		s.i++
		for {
			s.space()
			if s.peek() == '}' {
				break
			}
			start := s.i
			s.skipString()
			match := keyEquals(s.p[start:s.i], seg)
			s.space()
			s.i++ // ':'
			s.space()
			if match {
				found = s.i
			}
			s.skip()
			s.space()
			if s.peek() == ',' {
				s.i++
			}
		}
		if found < 0 {
			return false
		}
		s.i = found
		return true
	case '[':
		idx, err := strconv.Atoi(seg)
		if err != nil || idx < 0 {
			return false
		}
		s.i++
		for n := 0; ; n++ {
			s.space()
			if s.peek() == ']' {
				return false
			}
			if n == idx {
				return true
			}
			s.skip()
			s.space()
			if s.peek() == ',' {
				s.i++
			}
		}
	}
	return false
}

// keyEquals compares a quoted JSON key with seg, unescaping only when the
// key has escapes (rare), so the common path does not allocate.
func keyEquals(quoted []byte, seg string) bool {
	inner := quoted[1 : len(quoted)-1]
	for _, c := range inner {
		if c == '\\' {
			var k string
			if json.Unmarshal(quoted, &k) != nil {
				return false
			}
			return k == seg
		}
	}
	return string(inner) == seg
}

func (s *scanner) skipString() {
	s.i++ // opening quote
	for s.i < len(s.p) {
		switch s.p[s.i] {
		case '\\':
			s.i += 2
			continue
		case '"':
			s.i++
			return
		}
		s.i++
	}
}

// skip moves past one value of any type.
func (s *scanner) skip() {
	switch s.peek() {
	case '"':
		s.skipString()
	case '{', '[':
		d := 0
		for s.i < len(s.p) {
			switch s.p[s.i] {
			case '"':
				s.skipString()
				continue
			case '{', '[':
				d++
			case '}', ']':
				d--
			}
			s.i++
			if d == 0 {
				return
			}
		}
	default:
		for s.i < len(s.p) {
			switch s.p[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			s.i++
		}
	}
}

// value reads the scalar at the current position.
func (s *scanner) value() (Value, error) {
	start := s.i
	switch c := s.peek(); c {
	case '{', '[':
		return Value{}, ErrFieldNotValue
	case '"':
		s.skipString()
		raw := s.p[start:s.i]
		var text string
		if !hasEscape(raw) {
			text = string(raw[1 : len(raw)-1])
		} else if json.Unmarshal(raw, &text) != nil {
			return Value{}, ErrNotJSON
		}
		v := Value{Text: text, Kind: KindText}
		v.Num, v.IsNum = parseNumber(strings.TrimSpace(text))
		return v, nil
	case 't', 'f':
		s.skip()
		return Value{Text: string(s.p[start:s.i]), Kind: KindBool}, nil
	case 'n':
		s.skip()
		return Value{Text: "null", Kind: KindNull}, nil
	default:
		s.skip()
		text := string(s.p[start:s.i])
		f, ok := parseNumber(text)
		if !ok {
			return Value{}, ErrNotFinite // valid JSON number that overflows float64
		}
		return Value{Text: text, Num: f, IsNum: true, Kind: KindNumber}, nil
	}
}

func hasEscape(raw []byte) bool {
	for _, c := range raw {
		if c == '\\' {
			return true
		}
	}
	return false
}

// maxValueKept bounds the value text kept in alert state and mails.
const maxValueKept = 256

// Short returns v with its text cut to a length fit for a mail subject and
// for keeping in alert state.
func (v Value) Short() Value {
	if len(v.Text) > maxValueKept {
		cut := maxValueKept
		for cut > 0 && !utf8.RuneStart(v.Text[cut]) {
			cut--
		}
		v.Text = v.Text[:cut] + "…"
	}
	return v
}
