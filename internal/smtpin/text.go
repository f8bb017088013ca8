package smtpin

import (
	"bytes"
	"html"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message"
)

// maxDepth bounds nested multiparts, against a mail built to recurse.
const maxDepth = 8

// bodyText is the mail's text for the event: the first text/plain part,
// else the first text/html part as text, transfer encoding and charset
// decoded, attachments skipped, capped at max bytes.
func bodyText(m *parsed, max int) string {
	var h message.Header
	for _, f := range m.fields {
		if strings.HasPrefix(f.key, "Content-") {
			h.Add(f.key, f.value())
		}
	}
	e, err := message.New(h, bytes.NewReader(m.body))
	if e == nil {
		return capText(validUTF8(m.body), max)
	}
	plain, htm := findText(e, err, 0)
	if plain == "" && htm != "" {
		plain = htmlToText(htm)
	}
	return capText(plain, max)
}

// findText walks an entity for its first plain and first HTML text;
// newErr is what go-message said when it opened the entity.
func findText(e *message.Entity, newErr error, depth int) (plain, htm string) {
	if disp, _, _ := e.Header.ContentDisposition(); disp == "attachment" {
		return "", ""
	}
	mt, params, _ := e.Header.ContentType()
	switch {
	case mt == "" || mt == "text/plain":
		return readText(e, params, newErr), ""
	case mt == "text/html":
		return "", readText(e, params, newErr)
	case strings.HasPrefix(mt, "multipart/") && depth < maxDepth:
		mr := e.MultipartReader()
		for plain == "" {
			p, err := mr.NextPart()
			if p == nil {
				break
			}
			pl, ht := findText(p, err, depth+1)
			plain = pl
			if htm == "" {
				htm = ht
			}
		}
	}
	return plain, htm
}

// readText reads a text part. go-message decodes charsets only through
// its CharsetReader; when it has none for this one the bytes come raw and
// are decoded here.
func readText(e *message.Entity, params map[string]string, newErr error) string {
	b, _ := io.ReadAll(e.Body)
	if message.IsUnknownCharset(newErr) {
		if s, ok := decodeCharset(params["charset"], b); ok {
			return s
		}
	}
	return validUTF8(b)
}

// capText normalises line ends, drops control characters other than tab
// and newline, trims, and cuts at max bytes on a character boundary.
func capText(s string, max int) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || !unicode.IsControl(r) {
			return r
		}
		return -1
	}, s)
	s = strings.TrimSpace(s)
	return cutUTF8(s, max)
}

// cutUTF8 cuts s to at most max bytes without splitting a character.
func cutUTF8(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max]
}

// blockTags end a line when HTML becomes text.
var blockTags = map[string]bool{"br": true, "p": true, "div": true, "tr": true, "li": true, "table": true,
	"ul": true, "ol": true, "h1": true, "h2": true, "h3": true, "h4": true, "h5": true, "h6": true,
	"blockquote": true, "pre": true, "hr": true, "title": true}

// skipTags hold no text a reader sees.
var skipTags = map[string]bool{"script": true, "style": true, "head": true}

// htmlToText strips tags, keeps a line break where a block ends, and
// decodes entities: enough for the short HTML mails devices send.
func htmlToText(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			b.WriteString(collapse(s))
			break
		}
		b.WriteString(collapse(s[:i]))
		s = s[i:]
		if strings.HasPrefix(s, "<!--") {
			_, s, _ = strings.Cut(s, "-->")
			continue
		}
		tag, rest, ok := strings.Cut(s[1:], ">")
		if !ok {
			break
		}
		s = rest
		name := tagName(tag)
		if skipTags[name] && !strings.HasPrefix(tag, "/") {
			s = s[closingTag(s, name):]
		} else if blockTags[name] {
			b.WriteByte('\n')
		}
	}
	return tidyLines(html.UnescapeString(b.String()))
}

// closingTag finds "</name" in s without regard to case, or returns
// len(s); it looks at each '<' once, so a mail of a million "<script>"
// costs a million steps, not a million squared.
func closingTag(s, name string) int {
	for i := 0; ; {
		j := strings.IndexByte(s[i:], '<')
		if j < 0 {
			return len(s)
		}
		i += j
		if end := i + 2 + len(name); end <= len(s) && s[i+1] == '/' && strings.EqualFold(s[i+2:end], name) {
			return i
		}
		i++
	}
}

func tagName(tag string) string {
	tag = strings.TrimPrefix(tag, "/")
	if i := strings.IndexAny(tag, " \t\r\n/"); i >= 0 {
		tag = tag[:i]
	}
	return strings.ToLower(tag)
}

// collapse turns runs of white space in HTML source into one space, as a
// browser shows them.
func collapse(s string) string {
	f := strings.Fields(s)
	out := strings.Join(f, " ")
	if len(f) > 0 && s != "" {
		if unicode.IsSpace(rune(s[0])) {
			out = " " + out
		}
		if unicode.IsSpace(rune(s[len(s)-1])) {
			out += " "
		}
	} else if s != "" {
		out = " "
	}
	return out
}

// tidyLines trims every line and keeps at most one empty line in a row.
func tidyLines(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" && (len(out) == 0 || out[len(out)-1] == "") {
			continue
		}
		out = append(out, l)
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}
