package config

import (
	"bytes"
	"strings"

	"go.yaml.in/yaml/v3"
)

// syntaxError positions a YAML syntax error where the user must look.
//
// For a line indented wrongly, yaml reports "did not find expected key"
// (or "'-' indicator") at the start of the mapping or list it was in when
// it gave up: often line 1, or the comment line before the bad one, since
// comments close a block's lines for the parser. The line that broke the
// block is the first one without which the document still parses, so it
// is found by parsing shorter and shorter beginnings of the file (a
// binary search: a handful of parses even for a large file).
func syntaxError(data []byte, err error) (Pos, string) {
	pos, msg := syntaxPos(err), syntaxMsg(err)
	if strings.HasSuffix(msg, "mapping values are not allowed in this context") {
		// At the right line already: a key indented deeper than the one
		// before it, or a value such as "Alert: hot" that needs quotes.
		return Pos{Line: pos.Line, Col: indentCol(data, pos.Line)}, msg +
			" (a key indented deeper than the one above it, or a value with \": \" in it that needs quotes)"
	}
	if len(data) > maxSearched ||
		(!strings.HasSuffix(msg, "did not find expected key") && !strings.HasSuffix(msg, "did not find expected '-' indicator")) {
		return pos, msg
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	lo := pos.Line - 1 // this many lines parse, as the error came later
	if lo < 0 || lo >= len(lines) || !parses(bytes.Join(lines[:lo], nil)) {
		return pos, msg
	}
	hi := len(lines) // this many do not
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if parses(bytes.Join(lines[:mid], nil)) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return Pos{Line: hi, Col: indentCol(data, hi)}, msg + " (check the indentation of this line: it must line up with the keys of its mapping or the items of its list)"
}

// indentCol is the column of the first character of line (1-based).
func indentCol(data []byte, line int) int {
	lines := bytes.Split(data, []byte("\n"))
	if line < 1 || line > len(lines) {
		return 1
	}
	l := lines[line-1]
	return len(l) - len(bytes.TrimLeft(l, " ")) + 1
}

// maxSearched bounds the files searched for the bad line: a rules file is
// kilobytes, and a hostile 8 MiB one must not cost twenty full parses.
const maxSearched = 1 << 20

func parses(data []byte) bool {
	var n yaml.Node
	return yaml.Unmarshal(data, &n) == nil
}
