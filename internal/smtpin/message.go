package smtpin

import (
	"bytes"
	"net/textproto"
	"strings"
)

// parsed is a device's mail split into header fields and body, read
// leniently (devices write odd mail) but so that nothing a device sends
// can turn into a header line it did not write as one.
type parsed struct {
	fields []field
	body   []byte
}

// field is one header field as the lines it came in, without their line
// ends; every line after the first starts with a space or a tab, so
// writing the lines back joined by CRLF cannot start a new field.
type field struct {
	key   string // canonical: "Message-Id", "Subject"
	lines []string
}

// value is the field's body unfolded (RFC 5322 §2.2.3) and trimmed.
func (f field) value() string {
	_, v, _ := strings.Cut(f.lines[0], ":")
	return strings.TrimSpace(v + strings.Join(f.lines[1:], ""))
}

// renamed is the field's lines under another name.
func (f field) renamed(key string) []string {
	_, v, _ := strings.Cut(f.lines[0], ":")
	return append([]string{key + ":" + v}, f.lines[1:]...)
}

// parseMessage splits data at the first empty line. A message whose first
// line ends in CRLF has CRLF line ends: a lone CR or LF inside its header
// is text (blanked), never a line break, which is how header injection
// through a subject and SMTP smuggling are kept out. A message of bare
// LF lines (some sketches print "\n") is read by LF. A line that is not a
// header field (no colon, a bad name) starts the body: a device that
// forgot the empty line, or wrote no header at all, still gets its text
// through.
func parseMessage(data []byte) *parsed {
	eol := lineEnd(data)
	m := &parsed{}
	rest := data
	for len(rest) > 0 {
		line, next := cutLine(rest, eol)
		if len(line) == 0 {
			m.body = normalizeBody(next, eol)
			return m
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(m.fields) == 0 {
				break
			}
			f := &m.fields[len(m.fields)-1]
			f.lines = append(f.lines, blankControls(line))
		} else if key, ok := headerKey(line); ok {
			m.fields = append(m.fields, field{key: key, lines: []string{blankControls(line)}})
		} else {
			break
		}
		rest = next
	}
	m.body = normalizeBody(rest, eol)
	return m
}

func lineEnd(data []byte) string {
	if i := bytes.IndexByte(data, '\n'); i > 0 && data[i-1] != '\r' {
		return "\n"
	}
	return "\r\n"
}

func cutLine(b []byte, eol string) (line, rest []byte) {
	i := bytes.Index(b, []byte(eol))
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+len(eol):]
	if eol == "\n" {
		line = bytes.TrimSuffix(line, []byte("\r"))
	}
	return line, rest
}

// normalizeBody gives an LF-only body CRLF line ends, like its rebuilt
// header; a CRLF body is kept byte for byte.
func normalizeBody(b []byte, eol string) []byte {
	if eol == "\r\n" {
		return b
	}
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

// headerKey returns the canonical name of a header line, if it is one: a
// name of printable ASCII before a colon (RFC 5322 §2.2; trailing blanks,
// seen in the wild, are allowed).
func headerKey(line []byte) (string, bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", false
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return "", false
	}
	for _, c := range name {
		if c < 33 || c > 126 {
			return "", false
		}
	}
	return textproto.CanonicalMIMEHeaderKey(string(name)), true
}

// blankControls turns control characters other than tab into spaces.
func blankControls(line []byte) string {
	b := []byte(string(line))
	for i, c := range b {
		if c < 0x20 && c != '\t' || c == 0x7f {
			b[i] = ' '
		}
	}
	return string(b)
}

// get returns the value of the first field named key (canonical), or "".
func (m *parsed) get(key string) string {
	if f := m.field(key); f != nil {
		return f.value()
	}
	return ""
}

func (m *parsed) field(key string) *field {
	for i := range m.fields {
		if m.fields[i].key == key {
			return &m.fields[i]
		}
	}
	return nil
}
