package config

import "time"

// SelfAlerts is self_alerts: alertd telling its people that it cannot do
// its job — a source away too long, mail that cannot be delivered — with
// the same cooldown, rate limit and threading as any alert.
type SelfAlerts struct {
	// Enabled defaults to true when smtp is set (a spool is read by
	// nobody at 3 am) and false otherwise.
	Enabled *bool `yaml:"enabled"`
	// To defaults to defaults.to.
	To []string `yaml:"to"`
	// SourceDownAfter: a mail when a source (MQTT, a listener) has been
	// away this long, and one when it is back.
	SourceDownAfter Duration `yaml:"source_down_after"`
	// MailDelayedAfter: a mail when the outbox has held a mail this long;
	// it is delivered when the server takes mail again, which is the
	// point: it says how late the alerts were.
	MailDelayedAfter Duration `yaml:"mail_delayed_after"`

	Pos Positions `yaml:"-"`
}

// Self-alert defaults.
const (
	DefaultSourceDownAfter  = 5 * time.Minute
	DefaultMailDelayedAfter = 15 * time.Minute
)

// On reports whether self alerts are sent.
func (s *SelfAlerts) On(c *Config) bool {
	if s.Enabled != nil {
		return *s.Enabled
	}
	return c.SMTP != nil
}

func (s *SelfAlerts) defaults(c *Config) {
	if s.SourceDownAfter == 0 {
		s.SourceDownAfter = Duration(DefaultSourceDownAfter)
	}
	if s.MailDelayedAfter == 0 {
		s.MailDelayedAfter = Duration(DefaultMailDelayedAfter)
	}
	if len(s.To) == 0 {
		s.To = c.Defaults.To
	}
}

func (s *SelfAlerts) validate(c *Config, add func(Pos, string, ...any)) {
	if !s.On(c) {
		return
	}
	if s.SourceDownAfter.D() < time.Second {
		add(s.Pos.At("source_down_after"), "self_alerts.source_down_after: at least 1s")
	}
	if s.MailDelayedAfter.D() < time.Second {
		add(s.Pos.At("mail_delayed_after"), "self_alerts.mail_delayed_after: at least 1s")
	}
	if len(s.To) == 0 && s.Enabled != nil {
		add(s.Pos.At("enabled"), "self_alerts: no recipients: set self_alerts.to or defaults.to")
	}
}
