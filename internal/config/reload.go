package config

import (
	"fmt"
	"reflect"
	"strings"
)

// Unreloadable returns, positioned in next's file, every setting that
// differs between the running configuration and next but that a reload
// cannot apply while alertd runs: the store, the broker connection, the
// listeners, the SMTP server, the global series limit and the log format. Rules, defaults and
// log.level reload live. A reload with any of these is refused whole, so
// what runs is always one file's configuration, never a mix of two.
func Unreloadable(running, next *Config) Errors {
	var errs Errors
	sections := []struct {
		key       string
		old, new  any
		positions Positions
	}{
		{"mqtt", running.MQTT, next.MQTT, next.MQTT.Pos},
		{"smtp", running.SMTP, next.SMTP, smtpPos(next.SMTP)},
		{"store", running.Store, next.Store, next.Store.Pos},
		{"http", running.HTTP, next.HTTP, next.HTTP.Pos},
		{"limits", running.Limits, next.Limits, next.Limits.Pos},
		{"ingress", running.Ingress, next.Ingress, next.Ingress.Pos},
		{"log.format", running.Log.Format, next.Log.Format, next.Log.Pos},
	}
	for _, s := range sections {
		key, differs := firstDifference(s.key, reflect.ValueOf(s.old), reflect.ValueOf(s.new))
		if !differs {
			continue
		}
		sub := strings.TrimPrefix(strings.TrimPrefix(key, s.key), ".")
		first, _, _ := strings.Cut(sub, ".")
		pos := s.positions.At(first)
		if pos.Line == 0 {
			pos = Pos{Line: 1, Col: 1}
		}
		errs = append(errs, &Error{File: next.File, Pos: pos,
			Msg: fmt.Sprintf("%s changed: a reload cannot apply it; restart alertd (nothing of this file was applied)", key)})
	}
	return errs
}

func smtpPos(s *SMTP) Positions {
	if s == nil {
		return nil
	}
	return s.Pos
}

var secretType = reflect.TypeOf(Secret{})

// firstDifference compares two values of one configuration type, field by
// field with their YAML names, ignoring positions; secrets compare by
// value without ever being shown.
func firstDifference(key string, a, b reflect.Value) (string, bool) {
	if a.Type() == secretType {
		return key, a.Interface().(Secret).Reveal() != b.Interface().(Secret).Reveal()
	}
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return key, a.IsNil() != b.IsNil()
		}
		return firstDifference(key, a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			f := a.Type().Field(i)
			if f.Type == reflect.TypeOf(Positions(nil)) || !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" {
				continue
			}
			if k, d := firstDifference(key+"."+name, a.Field(i), b.Field(i)); d {
				return k, true
			}
		}
		return "", false
	case reflect.Slice, reflect.Map:
		return key, !reflect.DeepEqual(a.Interface(), b.Interface())
	}
	return key, a.Interface() != b.Interface()
}

// RuleChanges compares the rules of two configurations by name, after
// defaults were applied: a rule whose settings are the same in both is
// unchanged, wherever it moved in the file.
func RuleChanges(running, next *Config) (added, removed, changed []string) {
	old := map[string]*Rule{}
	for i := range running.Rules {
		old[running.Rules[i].Name] = &running.Rules[i]
	}
	seen := map[string]bool{}
	for i := range next.Rules {
		r := &next.Rules[i]
		seen[r.Name] = true
		o, ok := old[r.Name]
		switch {
		case !ok:
			added = append(added, r.Name)
		default:
			if _, d := firstDifference("", reflect.ValueOf(*o), reflect.ValueOf(*r)); d {
				changed = append(changed, r.Name)
			}
		}
	}
	for i := range running.Rules {
		if n := running.Rules[i].Name; !seen[n] {
			removed = append(removed, n)
		}
	}
	return added, removed, changed
}
