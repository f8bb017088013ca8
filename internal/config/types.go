package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Pos is a 1-based line and column in the configuration file.
type Pos struct{ Line, Col int }

// Positions records where each key of a mapping was set. A key that is
// absent was not set, which is how defaults know what to fill in.
type Positions map[string]Pos

// At is where key was set, or where its mapping starts when it was not.
func (p Positions) At(key string) Pos {
	if pos, ok := p[key]; ok {
		return pos
	}
	return p[""]
}

// Has reports whether key was set in the file.
func (p Positions) Has(key string) bool {
	if key == "" {
		return false
	}
	_, ok := p[key]
	return ok
}

// Duration is a time.Duration that also accepts a day unit ("2d").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// ParseDuration accepts Go durations ("90s", "1h30m") and whole days ("2d").
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 || days > 3650 {
			return 0, fmt.Errorf("invalid duration %q (use e.g. 30s, 10m, 2h or 1d)", s)
		}
		return Duration(time.Duration(days) * 24 * time.Hour), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use e.g. 30s, 10m, 2h or 1d)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q must not be negative", s)
	}
	return Duration(d), nil
}

// Rate is "N per period", written N/s, N/m, N/h or N/d.
type Rate struct {
	N   int
	Per time.Duration
}

// IsZero reports whether no rate was set.
func (r Rate) IsZero() bool { return r.N == 0 && r.Per == 0 }

func (r Rate) String() string {
	if r.IsZero() {
		return "unlimited"
	}
	unit := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h", 24 * time.Hour: "d"}[r.Per]
	return fmt.Sprintf("%d/%s", r.N, unit)
}

// MaxRateN bounds a rate limit's count: the gate keeps one timestamp per
// mail inside the window, so the state of a rule stays small.
const MaxRateN = 10000

// ParseRate parses "5/h" and its siblings.
func ParseRate(s string) (Rate, error) {
	bad := fmt.Errorf("invalid rate %q (use N/s, N/m, N/h or N/d, e.g. 5/h)", s)
	n, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, bad
	}
	count, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || count < 1 {
		return Rate{}, bad
	}
	if count > MaxRateN {
		return Rate{}, fmt.Errorf("rate %q is too high (at most %d per period)", s, MaxRateN)
	}
	per, ok := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[strings.TrimSpace(unit)]
	if !ok {
		return Rate{}, bad
	}
	return Rate{N: count, Per: per}, nil
}

// Scalar is a value compared by equals / not_equals: text, or a number
// when the YAML value was written as one (so 1 matches a payload of 1.0).
type Scalar struct {
	Text  string
	Num   float64
	IsNum bool
}

func (s Scalar) String() string { return s.Text }

func parseScalar(text, tag string) (Scalar, error) {
	sc := Scalar{Text: text}
	if tag == "!!int" || tag == "!!float" {
		f, err := strconv.ParseFloat(text, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return Scalar{}, fmt.Errorf("%q is not a finite number", text)
		}
		sc.Num, sc.IsNum = f, true
	}
	return sc, nil
}

func parseFloat(text string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(text), 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", text)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errors.New("threshold must be a finite number")
	}
	return f, nil
}

// Secret is a string that never prints: logs, errors and `check` output
// show "<secret>" instead of its value. The value sits behind a pointer
// because fmt, when it prints a value under a verb that does not suit it
// (%s of a struct holding a *Config, say), switches every method off and
// shows fields as they are: a string field would show the password, a
// pointer shows only an address.
type Secret struct{ value *string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{&s} }

// Redacted is how a non-empty secret is shown.
const Redacted = "<secret>"

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.Reveal() == "" }

func (s Secret) String() string {
	if s.IsZero() {
		return ""
	}
	return Redacted
}

// GoString keeps %#v from revealing the secret.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// Format covers the verbs String does not: a string type would otherwise
// print as "%!d(config.Secret=the-password)" under %d.
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'v', 's', 'q', 'x', 'X':
		fmt.Fprintf(f, fmt.FormatString(f, verb), s.String())
	default:
		fmt.Fprint(f, s.String())
	}
}

// MarshalText keeps encoders from revealing the secret.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret for the one place that needs it: the wire.
func (s Secret) Reveal() string {
	if s.value == nil {
		return ""
	}
	return *s.value
}
