package config

import (
	"fmt"
	"strings"
)

// Error is one problem in a configuration file, with where it is.
type Error struct {
	File string
	Pos  Pos
	Msg  string
}

func (e *Error) Error() string {
	file := e.File
	if file == "" {
		file = "<config>"
	}
	return fmt.Sprintf("%s:%d:%d: %s", file, e.Pos.Line, e.Pos.Col, e.Msg)
}

// Errors is every problem found in one file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// MaxErrors bounds how many problems one file reports. No one fixes a
// thousand mistakes from one run, and without a bound a hostile or
// generated file (a million empty rules, aliases repeating a bad mapping)
// makes check hold and print millions of lines.
const MaxErrors = 1000

// Add appends an error at pos. Past MaxErrors it records one last error
// saying so, then drops the rest.
func (es *Errors) Add(file string, pos Pos, format string, args ...any) {
	switch {
	case len(*es) < MaxErrors:
		*es = append(*es, &Error{File: file, Pos: pos, Msg: fmt.Sprintf(format, args...)})
	case len(*es) == MaxErrors:
		*es = append(*es, &Error{File: file, Pos: pos, Msg: fmt.Sprintf("too many errors (more than %d): fix these first", MaxErrors)})
	}
}

// Full reports whether Add has stopped recording.
func (es Errors) Full() bool { return len(es) > MaxErrors }

// Err returns nil when there is no error, so callers can return it directly.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}
