package httpin

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"
)

// tokens holds the configured device tokens as SHA-256 sums: comparing
// fixed-length sums in constant time leaks neither a token's content nor
// its length, and every configured token is compared on every request, so
// the time taken does not say which one came close.
type tokens struct {
	sums [][sha256.Size]byte
}

func newTokens(ts []string) (*tokens, error) {
	if len(ts) == 0 {
		return nil, errors.New("at least one token is required")
	}
	t := &tokens{}
	for i, tok := range ts {
		switch {
		case tok == "":
			return nil, fmt.Errorf("token %d is empty", i+1)
		case strings.ContainsFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
			// No device could send it in an Authorization header.
			return nil, fmt.Errorf("token %d contains spaces or control characters", i+1)
		}
		t.sums = append(t.sums, sha256.Sum256([]byte(tok)))
	}
	return t, nil
}

// allows reports whether r carries a configured token in any of the
// places a device may put it: "Authorization: Bearer T", Basic with any
// user and password T (RFC 7617), or the query parameter token=T.
func (t *tokens) allows(r *http.Request) bool {
	found := 0
	for _, c := range credentials(r) {
		found |= t.match(c)
	}
	return found == 1
}

func (t *tokens) match(candidate string) int {
	sum := sha256.Sum256([]byte(candidate))
	m := 0
	for i := range t.sums {
		m |= subtle.ConstantTimeCompare(sum[:], t.sums[i][:])
	}
	return m
}

func credentials(r *http.Request) []string {
	var cs []string
	if scheme, rest, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		cs = append(cs, strings.TrimSpace(rest))
	}
	if _, password, ok := r.BasicAuth(); ok {
		cs = append(cs, password)
	}
	return append(cs, r.URL.Query()["token"]...)
}
