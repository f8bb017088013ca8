package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decoder walks a yaml.Node tree into the config structs itself, instead of
// yaml's Decode, because yaml's strict mode reports lines without columns,
// stops at custom unmarshalers, and loses positions we need later.
type decoder struct {
	file   string
	errs   Errors
	env    func(string) (string, bool)
	visits int
	// failed holds where a value could not be decoded, so that validation
	// does not report the same mistake again (an invalid timeout is not
	// also "timeout must be greater than 0").
	failed map[Pos]bool
}

// maxVisits bounds the work an alias-heavy file can cause ("billion laughs").
// Every value and every key counts, unknown keys included.
const maxVisits = 1_000_000

// maxItems bounds a list: a rules file has tens of rules, not millions,
// and every rule costs a template compilation later.
const maxItems = 10_000

// stopped reports whether decoding gave up: too much work, or so many
// errors that more would not help.
func (d *decoder) stopped() bool { return d.visits > maxVisits || d.errs.Full() }

// visit counts one unit of work and reports whether to go on.
func (d *decoder) visit(n *yaml.Node) bool {
	d.visits++
	if d.visits == maxVisits+1 {
		d.keyErrorf(n, "document too large or too many aliases")
	}
	return !d.stopped()
}

func posOf(n *yaml.Node) Pos { return Pos{Line: n.Line, Col: n.Column} }

// errorf reports a value that could not be decoded.
func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	if d.failed == nil {
		d.failed = map[Pos]bool{}
	}
	d.failed[posOf(n)] = true
	d.errs.Add(d.file, posOf(n), format, args...)
}

// keyErrorf reports a problem with a key, not its value: the key's position
// is also where its mapping starts, so it must not hide later errors there.
func (d *decoder) keyErrorf(n *yaml.Node, format string, args ...any) {
	d.errs.Add(d.file, posOf(n), format, args...)
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return "a value"
	}
}

// decode fills v (a pointer) from n. path names the key for messages.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if !d.visit(n) {
		return
	}
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		// An empty key keeps its default; an empty list item such as a
		// bare "-" under rules still gets a position for its errors.
		setPos(v, Positions{"": posOf(n)})
		return
	}
	switch v.Interface().(type) {
	case *Secret:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, "%s: expected a single value, found %s", path, kindName(n))
			return
		}
		s, err := expand(n.Value, d.env)
		if err != nil {
			// The other expansion errors quote the text around "${",
			// which here is part of the password.
			if _, unset := err.(*unsetError); !unset {
				err = errors.New("malformed ${...} (write $${ for a literal ${)")
			}
			d.errorf(n, "%s: %v", path, err)
			return
		}
		v.Elem().Set(reflect.ValueOf(NewSecret(s)))
		return
	case *Duration:
		if s, ok := d.scalar(n, path); ok {
			dur, err := ParseDuration(s)
			if err != nil {
				d.errorf(n, "%s: %v", path, err)
				return
			}
			v.Elem().Set(reflect.ValueOf(dur))
		}
		return
	case *Rate:
		if s, ok := d.scalar(n, path); ok {
			r, err := ParseRate(s)
			if err != nil {
				d.errorf(n, "%s: %v", path, err)
				return
			}
			v.Elem().Set(reflect.ValueOf(r))
		}
		return
	case **Scalar:
		if s, ok := d.scalar(n, path); ok {
			sc, err := parseScalar(s, n.Tag)
			if err != nil {
				d.errorf(n, "%s: %v", path, err)
				return
			}
			v.Elem().Set(reflect.ValueOf(&sc))
		}
		return
	case **float64:
		if s, ok := d.scalar(n, path); ok {
			f, err := parseFloat(s)
			if err != nil {
				d.errorf(n, "%s: %v", path, err)
				return
			}
			v.Elem().Set(reflect.ValueOf(&f))
		}
		return
	}
	e := v.Elem()
	switch e.Kind() {
	case reflect.Pointer:
		if e.IsNil() {
			e.Set(reflect.New(e.Type().Elem()))
		}
		d.decode(n, e, path)
	case reflect.Struct:
		d.mapping(n, e, path)
	case reflect.Slice:
		d.slice(n, e, path)
	case reflect.String:
		if s, ok := d.scalar(n, path); ok {
			e.SetString(s)
		}
	case reflect.Int:
		if s, ok := d.scalar(n, path); ok {
			i, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				d.errorf(n, "%s: %q is not a whole number", path, s)
				return
			}
			e.SetInt(int64(i))
		}
	case reflect.Bool:
		if s, ok := d.scalar(n, path); ok {
			b, ok := parseBool(s)
			if !ok {
				d.errorf(n, "%s: %q is not true or false", path, s)
				return
			}
			e.SetBool(b)
		}
	default:
		panic(fmt.Sprintf("config: no decoder for %s", e.Type()))
	}
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on":
		return true, true
	case "false", "no", "off":
		return false, true
	}
	return false, false
}

// scalar returns n's text after ${VAR} expansion.
func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, "%s: expected a single value, found %s", path, kindName(n))
		return "", false
	}
	s, err := expand(n.Value, d.env)
	if err != nil {
		d.errorf(n, "%s: %v", path, err)
		return "", false
	}
	return s, true
}

func (d *decoder) slice(n *yaml.Node, e reflect.Value, path string) {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	} else if e.Type().Elem().Kind() != reflect.String {
		d.errorf(n, "%s: expected a list, found %s", path, kindName(n))
		return
	}
	if len(items) > maxItems {
		d.errorf(n, "%s: more than %d items", path, maxItems)
		return
	}
	out := reflect.MakeSlice(e.Type(), 0, len(items))
	for i, item := range items {
		before := len(d.errs)
		out = reflect.Append(out, reflect.Zero(e.Type().Elem()))
		d.decode(item, out.Index(out.Len()-1).Addr(), fmt.Sprintf("%s[%d]", path, i))
		if d.stopped() {
			// Keep only what was decoded whole: validation must not
			// report the rest as empty rules without positions.
			out = out.Slice(0, out.Len()-1)
			break
		}
		if len(d.errs) > before && e.Type().Elem().Kind() == reflect.String {
			// A recipient that did not decode was reported; left as ""
			// it would be reported again as "" is not an address.
			// (Rules stay, failed or not: their errors name them by index.)
			out = out.Slice(0, out.Len()-1)
		}
	}
	e.Set(out)
}

// fieldsOf maps yaml keys to struct field indexes.
func fieldsOf(t reflect.Type) (map[string]int, int) {
	keys := map[string]int{}
	posField := -1
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if f.Type == reflect.TypeOf(Positions(nil)) {
			posField = i
		}
		if tag == "" || tag == "-" {
			continue
		}
		keys[tag] = i
	}
	return keys, posField
}

func (d *decoder) mapping(n *yaml.Node, e reflect.Value, path string) {
	keys, posField := fieldsOf(e.Type())
	pos := Positions{"": posOf(n)}
	if posField >= 0 {
		// Set before decoding, so that errors found later about this
		// section or rule have a position even when it was not a mapping.
		e.Field(posField).Set(reflect.ValueOf(pos))
	}
	if n.Kind != yaml.MappingNode {
		if path == "" {
			d.errorf(n, "the configuration must be a mapping of keys such as mqtt: and rules:, found %s", kindName(n))
			return
		}
		d.errorf(n, "%s: expected a mapping of keys, found %s", strings.TrimPrefix(path, "."), kindName(n))
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if !d.visit(k) {
			return
		}
		name := k.Value
		full := strings.TrimPrefix(path+"."+name, ".")
		idx, ok := keys[name]
		if !ok {
			d.keyErrorf(k, "unknown key %q%s%s", name, where(path), suggest(name, keys))
			continue
		}
		if p, dup := pos[name]; dup {
			d.keyErrorf(k, "key %q already set at line %d", name, p.Line)
			continue
		}
		pos[name] = posOf(val)
		d.decode(val, e.Field(idx).Addr(), full)
	}
}

// setPos gives the struct v points to (when it keeps Positions) pos, unless
// it already has some.
func setPos(v reflect.Value, pos Positions) {
	e := v.Elem()
	if e.Kind() != reflect.Struct {
		return
	}
	if _, posField := fieldsOf(e.Type()); posField >= 0 && e.Field(posField).IsNil() {
		e.Field(posField).Set(reflect.ValueOf(pos))
	}
}

func where(path string) string {
	if path == "" {
		return ""
	}
	return " in " + strings.TrimPrefix(path, ".")
}

// suggest names the closest known key, for typos like "topci". A key is
// close when fewer than 3 edits away and it keeps at least one character
// of name ("<<" is not a typo of "to").
func suggest(name string, keys map[string]int) string {
	if name == "<<" {
		return " (YAML merge keys are not supported: put shared keys in defaults)"
	}
	best, bestDist := "", min(3, len(name))
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if dist := levenshtein(name, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func levenshtein(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
