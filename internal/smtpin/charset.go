package smtpin

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message"
)

// decodeCharset turns b in the named charset into UTF-8. It knows what
// devices send (UTF-8, ASCII, Latin-1 and Windows-1252, Latin-9) by
// itself; for any other charset it asks go-message's CharsetReader, which
// importing github.com/emersion/go-message/charset fills in for every
// charset there is.
func decodeCharset(label string, b []byte) (string, bool) {
	switch strings.ToLower(strings.TrimSpace(label)) {
	case "utf-8", "utf8", "us-ascii", "ascii", "":
		return validUTF8(b), true
	// WHATWG decodes every Latin-1 label as Windows-1252, its superset in
	// 0x80-0x9f, which is what such mail really holds.
	case "iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "cp819", "ibm819",
		"windows-1252", "cp1252", "x-cp1252":
		return fromCP1252(b), true
	case "iso-8859-15", "iso8859-15", "iso_8859-15", "latin-9", "latin9", "l9":
		return fromLatin9(b), true
	}
	if message.CharsetReader != nil {
		if r, err := message.CharsetReader(strings.ToLower(label), bytes.NewReader(b)); err == nil {
			if out, err := io.ReadAll(r); err == nil {
				return validUTF8(out), true
			}
		}
	}
	return "", false
}

// validUTF8 returns b as a string, reading it as Windows-1252 when it is
// not UTF-8: 8-bit mail that names no charset is almost always that.
func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return fromCP1252(b)
}

// cp1252 maps 0x80-0x9f; the five unassigned bytes keep their C1 code
// points, as WHATWG does. Above 0x9f Windows-1252 is Latin-1.
var cp1252 = [32]rune{
	0x20ac, 0x81, 0x201a, 0x192, 0x201e, 0x2026, 0x2020, 0x2021, 0x2c6, 0x2030, 0x160, 0x2039, 0x152, 0x8d, 0x17d, 0x8f,
	0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x2dc, 0x2122, 0x161, 0x203a, 0x153, 0x9d, 0x17e, 0x178,
}

func fromCP1252(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		switch {
		case c < 0x80:
			s.WriteByte(c)
		case c < 0xa0:
			s.WriteRune(cp1252[c-0x80])
		default:
			s.WriteRune(rune(c))
		}
	}
	return s.String()
}

// latin9 is where ISO 8859-15 differs from Latin-1.
var latin9 = map[byte]rune{0xa4: 0x20ac, 0xa6: 0x160, 0xa8: 0x161, 0xb4: 0x17d, 0xb8: 0x17e, 0xbc: 0x152, 0xbd: 0x153, 0xbe: 0x178}

func fromLatin9(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		if r, ok := latin9[c]; ok {
			s.WriteRune(r)
		} else {
			s.WriteRune(rune(c))
		}
	}
	return s.String()
}

var errUnknownCharset = errors.New("unknown charset")

// wordDecoder decodes RFC 2047 encoded words with the same charsets.
var wordDecoder = &mime.WordDecoder{CharsetReader: func(label string, r io.Reader) (io.Reader, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	s, ok := decodeCharset(label, b)
	if !ok {
		return nil, errUnknownCharset
	}
	return strings.NewReader(s), nil
}}

// decodeHeader decodes a header value: encoded words, and raw 8-bit text
// as Windows-1252 when it is not UTF-8.
func decodeHeader(v string) string {
	if d, err := wordDecoder.DecodeHeader(v); err == nil {
		v = d
	}
	return validUTF8([]byte(v))
}
