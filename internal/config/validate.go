package config

import (
	"fmt"
	"math"
	"net"
	"net/mail"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/topic"
)

// validate adds every semantic problem to errs. Each check names the key
// and points at the value that is wrong.
func (c *Config) validate(errs *Errors) {
	add := func(pos Pos, format string, args ...any) { errs.Add(c.File, pos, format, args...) }
	c.MQTT.validate(add)
	if c.SMTP != nil {
		c.SMTP.validate(add)
	}
	if c.HTTP.Listen != "" && c.HTTP.Listen != "off" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			add(c.HTTP.Pos.At("listen"), "http.listen: %q is not host:port", c.HTTP.Listen)
		}
	}
	if c.Timezone != "" {
		if _, err := time.LoadLocation(c.Timezone); err != nil {
			add(c.Pos.At("timezone"), "timezone: %q is not an IANA time zone (such as Europe/Madrid or America/New_York)", c.Timezone)
		}
	}
	if u := c.HTTP.ExternalURL; u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			add(c.HTTP.Pos.At("external_url"), "http.external_url: %q is not an http(s) URL", u)
		}
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		add(c.Log.Pos.At("level"), "log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	if !oneOf(c.Log.Format, "text", "json") {
		add(c.Log.Pos.At("format"), "log.format: %q is not one of text, json", c.Log.Format)
	}
	if c.Defaults.Pos.Has("name") {
		add(c.Defaults.Pos.At("name"), "defaults: name cannot have a default (each rule names itself)")
	}
	c.validateLimits(add)
	c.validateStore(add)
	c.Ingress.validate(add)
	c.validateListeners(add)
	c.SelfAlerts.validate(c, add)
	seen := map[string]Pos{}
	for i := range c.Rules {
		r := &c.Rules[i]
		r.validate(i, &c.Defaults, add)
		if r.Pos.Has("max_series") {
			label := fmt.Sprintf("rules[%d]", i)
			if r.Name != "" {
				label = fmt.Sprintf("rule %q", r.Name)
			}
			c.validateMaxSeries(label, r.MaxSeries, r.Pos.At("max_series"), add)
		}
		if r.Name == "" {
			continue
		}
		if first, dup := seen[r.Name]; dup {
			add(r.Pos.At("name"), "rules[%d]: duplicate rule name %q (first used at line %d)", i, r.Name, first.Line)
			continue
		}
		seen[r.Name] = r.Pos.At("name")
	}
}

// validateLimits checks the bounds on memory and the checkpoint pace.
func (c *Config) validateLimits(add func(Pos, string, ...any)) {
	if n := c.Limits.MaxSeries; n < 1 || n > MaxMaxSeries {
		add(c.Limits.Pos.At("max_series"), "limits.max_series: %d is not between 1 and %d", n, MaxMaxSeries)
	}
	if c.Defaults.Pos.Has("max_series") {
		c.validateMaxSeries("defaults", c.Defaults.MaxSeries, c.Defaults.Pos.At("max_series"), add)
	}
	if c.Store.CheckpointInterval.D() < MinCheckpointInterval {
		add(c.Store.Pos.At("checkpoint_interval"), "store.checkpoint_interval: %s is less than %s", c.Store.CheckpointInterval, MinCheckpointInterval)
	}
}

// validateMaxSeries checks a rule's (or the defaults') max_series, which
// only a rule or defaults that sets it can get wrong.
func (c *Config) validateMaxSeries(label string, n int, at Pos, add func(Pos, string, ...any)) {
	switch {
	case n < 1:
		add(at, "%s: max_series must be at least 1", label)
	case n > c.Limits.MaxSeries && c.Limits.MaxSeries >= 1:
		add(at, "%s: max_series (%d) is more than limits.max_series (%d)", label, n, c.Limits.MaxSeries)
	}
}

func oneOf(s string, options ...string) bool {
	for _, o := range options {
		if s == o {
			return true
		}
	}
	return false
}

func (m *MQTT) validate(add func(Pos, string, ...any)) {
	if m.StateTopic != "" {
		if err := topic.ValidateName(m.StateTopic); err != nil || strings.HasSuffix(m.StateTopic, "/") {
			add(m.Pos.At("state_topic"), "mqtt.state_topic: %q must be a topic without wildcards or a trailing /, like alertd/state", m.StateTopic)
		}
	}
	if m.HomeAssistantDiscovery && m.StateTopic == "" {
		add(m.Pos.At("home_assistant_discovery"), "mqtt.home_assistant_discovery needs mqtt.state_topic (the topic the entities read), e.g. state_topic: alertd/state")
	}
	if m.DiscoveryPrefix != "" {
		if err := topic.ValidateName(m.DiscoveryPrefix); err != nil || strings.HasSuffix(m.DiscoveryPrefix, "/") {
			add(m.Pos.At("discovery_prefix"), "mqtt.discovery_prefix: %q must be a topic without wildcards or a trailing /, like homeassistant", m.DiscoveryPrefix)
		}
	}
	if m.Broker != "" {
		u, err := url.Parse(m.Broker)
		switch {
		case err != nil || u.Host == "":
			add(m.Pos.At("broker"), "mqtt.broker: %q is not a URL like tcp://host:1883", m.Broker)
		case !oneOf(u.Scheme, "tcp", "ssl", "tls", "mqtts", "ws", "wss"):
			add(m.Pos.At("broker"), "mqtt.broker: scheme %q is not one of tcp, ssl, tls, mqtts, ws, wss", u.Scheme)
		case u.User != nil:
			add(m.Pos.At("broker"), "mqtt.broker: put credentials in mqtt.username and mqtt.password, not in the URL")
		case (u.Scheme == "tcp" || u.Scheme == "ws") && !m.Password.IsZero() && !m.AllowInsecureAuth && !isLoopback(u.Hostname()):
			add(m.Pos.At("broker"), "mqtt.broker: %s:// would send the password unencrypted to %s; use ssl:// (or wss://), "+
				"or set mqtt.allow_insecure_auth: true on a trusted network", u.Scheme, u.Hostname())
		}
	} else if m.Listen != "" || m.Pos.Has("listen") { // neither: store.backend nats, no MQTT at all
		if _, port, err := net.SplitHostPort(m.Listen); err != nil || !validPort(port) {
			add(m.Pos.At("listen"), "mqtt.listen: %q is not host:port", m.Listen)
		}
	}
	if m.QoS != 0 && m.QoS != 1 {
		add(m.Pos.At("qos"), "mqtt.qos: must be 0 or 1, got %d", m.QoS)
	}
	if len(m.ClientID) > 128 {
		add(m.Pos.At("client_id"), "mqtt.client_id: longer than 128 characters")
	}
	if !m.Password.IsZero() && m.Username == "" {
		add(m.Pos.At("password"), "mqtt.password is set but mqtt.username is empty")
	}
	m.TLS.validate("mqtt.tls", add)
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

func (t *TLS) validate(section string, add func(Pos, string, ...any)) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		add(t.Pos.At("cert_file"), "%s: cert_file and key_file go together", section)
	}
}

func (s *SMTP) validate(add func(Pos, string, ...any)) {
	if s.Host == "" {
		add(s.Pos.At("host"), "smtp.host is required (omit the whole smtp section to write mail to the spool)")
	} else if strings.ContainsAny(s.Host, " /:\r\n") {
		add(s.Pos.At("host"), "smtp.host: %q must be a host name or address, without scheme or port", s.Host)
	}
	if s.Port < 1 || s.Port > 65535 {
		add(s.Pos.At("port"), "smtp.port: %d is not a port number", s.Port)
	}
	if !oneOf(s.Security, "starttls", "tls", "none") {
		add(s.Pos.At("security"), "smtp.security: %q is not one of starttls, tls, none", s.Security)
	}
	s.validatePortSecurity(add)
	if !oneOf(s.Auth, "auto", "plain", "login", "xoauth2", "oauthbearer", "none") {
		add(s.Pos.At("auth"), "smtp.auth: %q is not one of auto, plain, login, xoauth2, oauthbearer, none", s.Auth)
	}
	switch {
	case s.OAuth2 != nil:
		if s.Auth == "plain" || s.Auth == "login" || s.Auth == "none" {
			add(s.Pos.At("auth"), "smtp.auth: %s does not use smtp.oauth2; set auth: xoauth2 (Microsoft 365, Gmail), oauthbearer, or auto", s.Auth)
		}
		if !s.Password.IsZero() || s.PasswordFile != "" {
			add(s.OAuth2.Pos.At(""), "smtp.oauth2 and smtp.password are both set: alertd logs in with the token; remove the password")
		}
		s.OAuth2.validate(s, add)
	case OAuthMechanism(s.Auth):
		add(s.Pos.At("auth"), "smtp.auth: %s needs an smtp.oauth2 section (provider, client_id, refresh_token_file)", s.Auth)
	}
	if s.Username != "" && s.Password.IsZero() && s.PasswordFile == "" && s.Auth != "none" && s.OAuth2 == nil && !OAuthMechanism(s.Auth) {
		// At the password when it is there (empty, or not decoded and
		// reported already), else at the username.
		at := s.Pos.At("username")
		if s.Pos.Has("password") {
			at = s.Pos.At("password")
		}
		add(at, "smtp.username is set but smtp.password (or password_file) is empty")
	}
	if s.Security == "none" && s.Username != "" && s.Auth != "none" && !s.AllowInsecureAuth {
		add(s.Pos.At("security"), "smtp.security: none would send the password unencrypted; use starttls or tls, or set allow_insecure_auth: true on a trusted network")
	}
	if s.From == "" {
		add(s.Pos.At("from"), "smtp.from is required, e.g. \"Alerts <alerts@example.org>\"")
	} else if _, err := mail.ParseAddress(s.From); err != nil {
		add(s.Pos.At("from"), "smtp.from: %q is not an address: %v", s.From, err)
	}
	if strings.ContainsAny(s.Helo, " \r\n") {
		add(s.Pos.At("helo"), "smtp.helo: %q must be a single host name", s.Helo)
	}
	if s.MaxConnections < 1 || s.MaxConnections > 16 {
		add(s.Pos.At("max_connections"), "smtp.max_connections: %d is not between 1 and 16", s.MaxConnections)
	}
	if s.Timeout.D() <= 0 {
		add(s.Pos.At("timeout"), "smtp.timeout must be greater than 0")
	}
	r := &s.Retry
	if r.Initial.D() <= 0 {
		add(r.Pos.At("initial"), "smtp.retry.initial must be greater than 0")
	}
	if r.Max.D() < r.Initial.D() {
		add(r.Pos.At("max"), "smtp.retry.max (%s) must not be less than retry.initial (%s)", r.Max, r.Initial)
	}
	if r.GiveUpAfter.D() <= 0 {
		add(r.Pos.At("give_up_after"), "smtp.retry.give_up_after must be greater than 0")
	}
	s.TLS.validate("smtp.tls", add)
}

// validatePortSecurity refuses the two mixes of port and security that
// cannot work with any provider (RFC 8314 section 3.3: 465 is implicit
// TLS, 587 is submission with STARTTLS): the client would wait for a
// greeting that comes only after a TLS handshake, or send a TLS handshake
// to a server that greets in plaintext. Other ports are servers of one's
// own, where either may be right, so an explicit security stays allowed.
func (s *SMTP) validatePortSecurity(add func(Pos, string, ...any)) {
	switch {
	case s.Port == 465 && s.Security == "starttls":
		add(s.Pos.At("security"), "smtp.security: starttls cannot work on port 465, which speaks TLS from the first byte; "+
			"set security: tls (or port: 587 for STARTTLS)")
	case s.Port == 587 && s.Security == "tls":
		add(s.Pos.At("security"), "smtp.security: tls cannot work on port 587, which greets in plaintext and expects STARTTLS; "+
			"set security: starttls (or port: 465 for implicit TLS)")
	}
}

var ruleName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func (r *Rule) validate(i int, defaults *Rule, add func(Pos, string, ...any)) {
	at := func(key string) Pos { return r.KeyPos(defaults, key) }
	label := fmt.Sprintf("rules[%d]", i)
	if r.Name != "" {
		label = fmt.Sprintf("rule %q", r.Name)
	}
	switch {
	case !r.Pos.Has("name"):
		add(r.Pos.At(""), "%s: name is required", label)
	case !ruleName.MatchString(r.Name):
		add(at("name"), "%s: name may use letters, digits, '_', '.' and '-' (at most 128)", label)
	}
	switch {
	case r.Topic == "" && (r.Pos.Has("topic") || defaults.Pos.Has("topic")):
		// Written but empty: mostly "topic: #", which YAML reads as a key
		// with no value, the # starting a comment.
		add(at("topic"), "%s: topic is empty: an unquoted # starts a YAML comment, so topic: # means no topic at all; "+
			"quote the filter: topic: \"#\"", label)
	case r.Topic == "":
		add(at("topic"), "%s: topic is required (an MQTT filter such as sensors/+/telemetry)", label)
	default:
		if err := topic.ValidateFilter(r.Topic); err != nil {
			add(at("topic"), "%s: invalid topic filter %q: %v", label, r.Topic, err)
		}
	}
	if strings.HasPrefix(r.Field, ".") || strings.HasSuffix(r.Field, ".") || strings.Contains(r.Field, "..") {
		add(at("field"), "%s: field %q is not a dot path like power.battery", label, r.Field)
	}
	r.validateCondition(label, at, add)
	if len(r.To) == 0 {
		add(r.Pos.At(""), "%s: no recipients: set to: here or in defaults", label)
	}
	for _, to := range r.To {
		if a, err := mail.ParseAddress(to); err != nil || strings.ContainsAny(a.Address, "\r\n") {
			add(at("to"), "%s: %q is not an e-mail address", label, to)
		}
	}
	if strings.ContainsAny(r.Severity, "\r\n") || len(r.Severity) > 32 {
		add(at("severity"), "%s: severity must be a short word", label)
	}
	if r.RateLimit.N > 0 && r.RateLimit.Per < time.Second {
		add(at("rate_limit"), "%s: invalid rate_limit", label)
	}
}

func (r *Rule) validateCondition(label string, at func(string) Pos, add func(Pos, string, ...any)) {
	threshold := r.Above != nil || r.Below != nil
	hasCond := threshold || r.Equals != nil || r.NotEquals != nil
	if r.When != "" {
		switch {
		case hasCond || r.Field != "":
			add(at("when"), "%s: when is a whole condition: it cannot be combined with field, above, below, equals or not_equals", label)
		case r.SilentFor.D() > 0:
			add(at("when"), "%s: when cannot be combined with silent_for", label)
		case len(r.When) > 2048:
			add(at("when"), "%s: when is longer than 2048 characters", label)
		}
		if r.Hysteresis != nil {
			add(at("hysteresis"), "%s: hysteresis applies to above/below thresholds only", label)
		}
		return
	}
	if r.For.D() < 0 || r.Repeat.D() < 0 || r.SilentFor.D() < 0 || r.GroupWait.D() < 0 {
		add(r.Pos.At(""), "%s: for, repeat, silent_for and group_wait must not be negative", label)
	}
	if r.Hysteresis != nil {
		switch h := *r.Hysteresis; {
		case !threshold:
			add(at("hysteresis"), "%s: hysteresis applies to above/below thresholds only", label)
		case h < 0 || math.IsNaN(h) || math.IsInf(h, 0):
			add(at("hysteresis"), "%s: hysteresis must be a number of 0 or more", label)
		case r.Above != nil && r.Below != nil && 2*h >= *r.Above-*r.Below:
			add(at("hysteresis"), "%s: hysteresis %v is too wide for the band [%v, %v]: the alert could never clear",
				label, h, *r.Below, *r.Above)
		}
	}
	if r.SilentFor.D() > 0 {
		if hasCond || r.Field != "" {
			add(at("silent_for"), "%s: silent_for makes a silence rule and cannot be combined with a field or condition; "+
				"write a separate rule for the threshold", label)
		}
		if r.For.D() > 0 {
			add(at("for"), "%s: for does not apply to silent_for rules (silent_for is already a duration)", label)
		}
		return
	}
	switch {
	case !threshold && r.Equals == nil && r.NotEquals == nil:
		add(r.Pos.At(""), "%s: no condition: set above, below, equals, not_equals, when or silent_for", label)
	case threshold && (r.Equals != nil || r.NotEquals != nil):
		key := "equals"
		if r.Equals == nil {
			key = "not_equals"
		}
		add(at(key), "%s: %s cannot be combined with above/below", label, key)
	case r.Equals != nil && r.NotEquals != nil:
		add(at("not_equals"), "%s: equals and not_equals cannot be combined", label)
	case r.Above != nil && r.Below != nil && *r.Below > *r.Above:
		add(at("below"), "%s: below (%v) is greater than above (%v): no value could ever be normal; "+
			"above and below together fire outside the band [below, above]", label, *r.Below, *r.Above)
	}
}

// isLoopback reports whether host names this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validateListeners refuses two listeners on one address: run would
// otherwise stop at start with "address already in use" and no position.
// Port 0 (any free port) never clashes; a wildcard host (0.0.0.0, ::,
// empty) clashes with every host on the same port. Names are not
// resolved: localhost:9464 beside 127.0.0.1:9464 is still found at start.
func (c *Config) validateListeners(add func(Pos, string, ...any)) {
	type listener struct {
		key, addr string
		pos       Pos
	}
	var ls []listener
	if c.HTTP.Listen != "" && c.HTTP.Listen != "off" {
		ls = append(ls, listener{"http.listen", c.HTTP.Listen, c.HTTP.Pos.At("listen")})
	}
	if c.MQTT.Broker == "" && c.MQTT.Listen != "" {
		ls = append(ls, listener{"mqtt.listen", c.MQTT.Listen, c.MQTT.Pos.At("listen")})
	}
	if s := c.Ingress.SMTP; s != nil {
		ls = append(ls, listener{"ingress.smtp.listen", s.Listen, s.Pos.At("listen")})
	}
	if h := c.Ingress.HTTP; h != nil {
		ls = append(ls, listener{"ingress.http.listen", h.Listen, h.Pos.At("listen")})
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" } // SplitHostPort strips [ ]
	for i, a := range ls {
		ha, pa, err := net.SplitHostPort(a.addr)
		if err != nil || pa == "0" {
			continue
		}
		for _, b := range ls[:i] {
			hb, pb, err := net.SplitHostPort(b.addr)
			if err != nil || pb != pa {
				continue
			}
			if ha == hb || wildcard(ha) || wildcard(hb) {
				add(a.pos, "%s: %q and %s %q are the same address: each listener needs its own port", a.key, a.addr, b.key, b.addr)
			}
		}
	}
}
