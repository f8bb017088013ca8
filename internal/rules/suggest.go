package rules

import (
	"fmt"
	"reflect"
	"regexp"

	"github.com/alertd/alertd/internal/config"
)

// unknownField matches text/template's error for a field a type does not
// have. ExecError carries no field name, so its text is all there is.
var unknownField = regexp.MustCompile(`can't evaluate field (\w+) in type \*?rules\.(Data|Time)\b`)

// fieldNames are what a template can name after a dot, by type.
var fieldNames = map[string][]string{"Data": namesOf(reflect.TypeFor[Data]()), "Time": namesOf(reflect.TypeFor[Time]())}

func namesOf(t reflect.Type) []string {
	var names []string
	if t.Kind() == reflect.Struct {
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() && !f.Anonymous {
				names = append(names, f.Name)
			}
		}
	}
	for i := range t.NumMethod() {
		names = append(names, t.Method(i).Name)
	}
	return names
}

// suggestField adds "did you mean .Value?" to an error about a field the
// template data does not have, when one is close.
func suggestField(err error) error {
	m := unknownField.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	best, ok := config.Closest(m[1], fieldNames[m[2]])
	if !ok {
		return err
	}
	return fmt.Errorf("%w (did you mean .%s?)", err, best)
}
