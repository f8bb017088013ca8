package smtpin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Users maps each user name that may AUTH to its password. It prints and
// logs its names only, never a password.
type Users map[string]string

// String shows the user names, sorted.
func (u Users) String() string {
	names := make([]string, 0, len(u))
	for n := range u {
		names = append(names, n+":<secret>")
	}
	slices.Sort(names)
	return "[" + strings.Join(names, " ") + "]"
}

// Format keeps every fmt verb (%v, %#v, %+v...) from showing a password.
func (u Users) Format(f fmt.State, _ rune) { fmt.Fprint(f, u.String()) }

// LogValue keeps slog from showing a password.
func (u Users) LogValue() slog.Value { return slog.StringValue(u.String()) }

// credentials checks passwords in constant time: it compares SHA-256 sums,
// so neither a password's length nor whether the user exists shows in the
// time the check takes.
type credentials struct {
	sums  map[string][sha256.Size]byte
	dummy [sha256.Size]byte // compared for unknown users
}

func newCredentials(u Users) (*credentials, error) {
	if len(u) == 0 {
		return nil, nil
	}
	c := &credentials{sums: map[string][sha256.Size]byte{}}
	for name, pass := range u {
		if name == "" || strings.ContainsAny(name, "\x00\r\n") || pass == "" {
			return nil, &ConfigError{"users", fmt.Errorf("user %q: a name and a password are required", name)}
		}
		c.sums[name] = sha256.Sum256([]byte(pass))
	}
	rand.Read(c.dummy[:])
	return c, nil
}

// check reports whether user exists and pass is its password.
func (c *credentials) check(user, pass string) (known, ok bool) {
	want, known := c.sums[user]
	if !known {
		want = c.dummy
	}
	got := sha256.Sum256([]byte(pass))
	return known, subtle.ConstantTimeCompare(got[:], want[:]) == 1 && known
}

// Prompts of the LOGIN mechanism, as device libraries and by-hand
// telnet sessions expect them: base64 "VXNlcm5hbWU6" and "UGFzc3dvcmQ6".
const (
	promptUser = "Username:"
	promptPass = "Password:"
)

// loginServer is the server side of AUTH LOGIN, which go-sasl lacks. It
// takes the user name as an initial response too ("AUTH LOGIN dXNlcg==",
// as go-sasl's and Python's clients send it).
type loginServer struct {
	check     func(authz, user, pass string) error
	malformed func() error
	user      string
	step      int
}

var _ sasl.Server = (*loginServer)(nil)

func (l *loginServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		l.step = 1
		if resp == nil {
			return []byte(promptUser), false, nil
		}
		fallthrough
	case 1:
		l.user, l.step = string(resp), 2
		return []byte(promptPass), false, nil
	case 2:
		l.step = 3
		return nil, true, l.check("", l.user, string(resp))
	}
	return nil, true, l.malformed()
}

// plainServer is go-sasl's PLAIN with its untyped errors (a response
// without two NULs) answered as SMTP replies, not as go-smtp's temporary
// 454.
type plainServer struct {
	sasl.Server
	malformed func() error
}

func (p plainServer) Next(resp []byte) ([]byte, bool, error) {
	ch, done, err := p.Server.Next(resp)
	if se := (*smtp.SMTPError)(nil); err != nil && !errors.As(err, &se) {
		return nil, true, p.malformed()
	}
	return ch, done, err
}
