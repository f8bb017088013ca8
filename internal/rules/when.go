package rules

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// whenCond is a rule's `when:` expression, compiled once at load and run
// against the payload's top-level fields.
type whenCond struct {
	src  string
	prog *vm.Program
}

// ErrWhen is a payload the expression could not be evaluated on (a field
// of the wrong type, a missing field compared with a number).
var ErrWhen = errors.New("when expression failed on this payload")

// whenError carries the position inside the expression.
type whenError struct {
	line, col int // 1-based, within the expression
	msg       string
}

func (e *whenError) Error() string { return e.msg }

func compileWhen(src string) (*whenCond, error) {
	prog, err := expr.Compile(src, expr.Env(map[string]any{}), expr.AllowUndefinedVariables(), expr.AsBool())
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			return nil, &whenError{line: fe.Line, col: fe.Column + 1, msg: fe.Message}
		}
		return nil, err
	}
	return &whenCond{src: src, prog: prog}, nil
}

// eval decodes the payload (already checked for size, depth and UTF-8)
// and runs the expression on its fields.
func (w *whenCond) eval(p []byte) (bool, error) {
	var env map[string]any
	if err := json.Unmarshal(p, &env); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return false, ErrNotJSON
		}
		return false, ErrNotObject
	}
	out, err := expr.Run(w.prog, env)
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrWhen, err)
	}
	b, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("%w: it gave %T, not true or false", ErrWhen, out)
	}
	return b, nil
}
