package httpin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"unicode/utf8"

	"github.com/alertd/alertd/internal/payload"
)

// MaxDepth is the deepest JSON nesting accepted, the depth to which the
// rules read a payload. It is checked in one pass before any parser runs.
const MaxDepth = payload.MaxDepth

// readBody reads the whole body, at most maxBody bytes.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	tooBig := &refusal{status: http.StatusRequestEntityTooLarge, result: ResultTooBig,
		msg: fmt.Sprintf("body larger than %d bytes", s.maxBody)}
	if r.ContentLength > s.maxBody {
		return nil, tooBig // without reading a byte of it
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	var over *http.MaxBytesError
	switch {
	case err == nil:
		return body, nil
	case errors.As(err, &over):
		return nil, tooBig
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, &refusal{status: http.StatusRequestTimeout, result: ResultBadRequest,
			msg: "body not received in time"}
	}
	return nil, badRequest("body cut short")
}

// checkJSON accepts a JSON body to be passed on byte for byte.
func checkJSON(b []byte) error {
	switch {
	case !utf8.Valid(b):
		return badRequest("body is not valid UTF-8")
	case payload.Depth(b) > MaxDepth:
		return badRequest(fmt.Sprintf("JSON nested deeper than %d", MaxDepth))
	case !json.Valid(b):
		// NaN and Infinity are not JSON either.
		return badRequest("body is not valid JSON")
	}
	return nil
}

// queryObject is a GET's query, minus the token, as a flat JSON object.
func queryObject(rawQuery string) ([]byte, error) {
	return flatObject(rawQuery, "query")
}

// formObject is a form body as a flat JSON object.
func formObject(body string) ([]byte, error) {
	return flatObject(body, "form")
}

// flatObject turns "temp=31.5&room=cellar" into {"room":"cellar","temp":31.5}:
// keys sorted, a value that is a JSON number kept as that number (as
// written: "31.50" stays 31.50), everything else a string. A token field
// never becomes part of a payload, which rules may put into mails.
func flatObject(encoded, what string) ([]byte, error) {
	vals, err := url.ParseQuery(encoded)
	if err != nil {
		return nil, badRequest(fmt.Sprintf("bad %s encoding: %v", what, err))
	}
	delete(vals, "token")
	obj := make(map[string]any, len(vals))
	for k, vs := range vals {
		switch {
		case k == "":
			return nil, badRequest(fmt.Sprintf("%s field without a name", what))
		case len(vs) > 1:
			return nil, badRequest(fmt.Sprintf("%s field %q given %d times", what, short(k), len(vs)))
		case !utf8.ValidString(k) || !utf8.ValidString(vs[0]):
			return nil, badRequest(fmt.Sprintf("%s is not valid UTF-8", what))
		}
		obj[k] = scalar(vs[0])
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // the payload may end up in a mail, not a web page
	if err := enc.Encode(obj); err != nil {
		return nil, badRequest(fmt.Sprintf("%s: %v", what, err))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func scalar(v string) any {
	if isNumber(v) {
		return json.Number(v)
	}
	return v
}

// isNumber accepts JSON number syntax that fits a float64: not "0x10",
// "1_000", "NaN", "Inf", "007" (kept as text, like a postcode) or "1e999".
func isNumber(s string) bool {
	if s == "" || !(s[0] == '-' || s[0] >= '0' && s[0] <= '9') || !json.Valid([]byte(s)) {
		return false
	}
	f, err := strconv.ParseFloat(s, 64)
	return err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
}

// short bounds what a one-line error repeats of the client's input.
func short(s string) string {
	if len(s) <= 40 {
		return s
	}
	cut := 40
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
