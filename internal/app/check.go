package app

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/alertd/alertd/internal/config"
)

// Check loads the file at path and compiles its rules and TLS settings
// without connecting anywhere. The error, when not nil, holds every problem
// found (config.Errors, sorted by position) or says why the file could not
// be read.
func Check(path string) (*config.Config, error) {
	cfg, err := config.LoadFile(path)
	var errs config.Errors
	if err != nil && !errors.As(err, &errs) {
		return nil, err
	}
	if cfg == nil {
		return nil, err
	}
	if _, cerr := compile(cfg, nil); cerr != nil {
		var more config.Errors
		if errors.As(cerr, &more) {
			errs = append(errs, more...)
		}
	}
	errs = append(errs, checkTLS(cfg)...)
	if len(errs) == 0 {
		return cfg, nil
	}
	slices.SortStableFunc(errs, func(a, b *config.Error) int {
		return cmp.Or(cmp.Compare(tooMany(a), tooMany(b)), cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Pos.Col, b.Pos.Col))
	})
	return nil, errs
}

// checkTLS loads the CA and certificate files the way Run will.
func checkTLS(cfg *config.Config) config.Errors {
	var errs config.Errors
	try := func(section string, t config.TLS) {
		if _, err := clientTLS(t, ""); err != nil {
			key := "ca_file"
			if t.CAFile == "" {
				key = "cert_file"
			}
			errs.Add(cfg.File, t.Pos.At(key), "%s: %v", section, err)
		}
	}
	if isTLSScheme(cfg.MQTT.Broker) || cfg.MQTT.TLS.CAFile != "" || cfg.MQTT.TLS.CertFile != "" {
		try("mqtt.tls", cfg.MQTT.TLS)
	}
	if cfg.SMTP != nil {
		try("smtp.tls", cfg.SMTP.TLS)
	}
	return errs
}

// Summary is the one line `alertd check` prints for a valid file. It
// names where alertd will connect and never shows a secret.
func Summary(cfg *config.Config) string {
	broker := "embedded broker on " + cfg.MQTT.Listen
	if cfg.MQTT.Broker != "" {
		broker = "broker " + cfg.MQTT.Broker
	}
	mail := "mail as .eml files in " + cfg.Store.Spool
	if s := cfg.SMTP; s != nil {
		auth := "no auth"
		if s.Username != "" && s.Auth != "none" {
			auth = fmt.Sprintf("auth %s as %s", s.Auth, s.Username)
		}
		mail = fmt.Sprintf("mail via %s:%d (%s, %s)", s.Host, s.Port, s.Security, auth)
	}
	return fmt.Sprintf("%s: ok: %d rule(s), %s, %s, store %s", cfg.File, len(cfg.Rules), broker, mail, cfg.Store.Path)
}

// tooMany sorts the "too many errors" line last.
func tooMany(e *config.Error) int {
	if strings.HasPrefix(e.Msg, "too many errors") {
		return 1
	}
	return 0
}
