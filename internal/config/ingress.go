package config

import (
	"net"
	"net/netip"
	"strings"

	"github.com/alertd/alertd/internal/payload"
)

// Ingress is how devices that cannot speak MQTT reach alertd: an SMTP
// listener (the seed's "Raspberry Pi as relay") and an HTTP listener
// (the seed's "HTTP POST to a server that sends the mail").
type Ingress struct {
	// RelayTo is every recipient mail from devices may go to: an address
	// ("ops@example.org") or a whole domain ("@example.org"). Nothing else
	// is ever relayed, so alertd can never be an open relay.
	RelayTo []string `yaml:"relay_to"`
	// Cooldown holds back the same mail (sender, subject, text) sent
	// again within it; RateLimit bounds the mails one client may have
	// relayed. A looping sketch must not flood the upstream account.
	Cooldown  Duration     `yaml:"cooldown"`
	RateLimit Rate         `yaml:"rate_limit"`
	SMTP      *IngressSMTP `yaml:"smtp"` // nil: no SMTP listener
	HTTP      *IngressHTTP `yaml:"http"` // nil: no device HTTP listener

	Pos Positions `yaml:"-"`
}

// IngressSMTP is the SMTP listener for devices.
type IngressSMTP struct {
	Listen   string `yaml:"listen"`
	Hostname string `yaml:"hostname"` // greeting name and alertd's own mail domain; default: the host name
	// Networks is who may connect at all (CIDR); default loopback only.
	Networks        []string      `yaml:"networks"`
	Users           []IngressUser `yaml:"users"` // when set, every client must AUTH before MAIL
	MaxMessageBytes int           `yaml:"max_message_bytes"`
	TLS             TLS           `yaml:"tls"` // cert_file and key_file: offer STARTTLS

	Pos Positions `yaml:"-"`
}

// IngressUser is one device login of the SMTP listener.
type IngressUser struct {
	Username     string `yaml:"username"`
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`

	Pos Positions `yaml:"-"`
}

// IngressHTTP is the HTTP listener for devices.
type IngressHTTP struct {
	Listen       string   `yaml:"listen"`
	Tokens       []Secret `yaml:"tokens"`
	MaxBodyBytes int      `yaml:"max_body_bytes"`

	Pos Positions `yaml:"-"`
}

// Ingress defaults, each with its reason.
const (
	// DefaultMaxMessageBytes: device mails are a few hundred bytes; a
	// connection holds its mail in memory until it is committed.
	DefaultMaxMessageBytes = 1 << 20
	// MaxMaxMessageBytes: the outbox keeps the whole mail in one value.
	MaxMaxMessageBytes = 25 << 20
	// DefaultMaxBodyBytes is the largest payload a rule reads (64 KiB): a
	// bigger body could never alert.
	DefaultMaxBodyBytes = payload.MaxBytes
)

// DefaultNetworks is who may use the SMTP listener when networks is not
// set: this machine only, the one network that is safe without thinking.
var DefaultNetworks = []string{"127.0.0.0/8", "::1/128"}

func (in *Ingress) applyDefaults() {
	if !in.Pos.Has("cooldown") {
		in.Cooldown = Duration(DefaultCooldown)
	}
	if !in.Pos.Has("rate_limit") {
		in.RateLimit = DefaultRateLimit
	}
	if s := in.SMTP; s != nil {
		if len(s.Networks) == 0 && !s.Pos.Has("networks") {
			s.Networks = append([]string(nil), DefaultNetworks...)
		}
		if s.MaxMessageBytes == 0 && !s.Pos.Has("max_message_bytes") {
			s.MaxMessageBytes = DefaultMaxMessageBytes
		}
	}
	if h := in.HTTP; h != nil && h.MaxBodyBytes == 0 && !h.Pos.Has("max_body_bytes") {
		h.MaxBodyBytes = DefaultMaxBodyBytes
	}
}

// validate checks the ingress section: above all that no setting makes
// alertd an open relay.
func (in *Ingress) validate(add func(Pos, string, ...any)) {
	if (in.SMTP != nil || in.HTTP != nil) && len(in.RelayTo) == 0 {
		add(in.Pos.At("relay_to"), "ingress.relay_to: required with ingress.smtp or ingress.http: the only recipients mail from devices may go to (an address, or @domain)")
	}
	for _, r := range in.RelayTo {
		if !validRelayTo(r) {
			add(in.Pos.At("relay_to"), "ingress.relay_to: %q is not an address (ops@example.org) or a domain (@example.org)", r)
		}
	}
	if s := in.SMTP; s != nil {
		s.validate(add)
	}
	if h := in.HTTP; h != nil {
		h.validate(add)
	}
}

func validRelayTo(r string) bool {
	_, domain, ok := strings.Cut(r, "@")
	return ok && !strings.ContainsAny(r, " \t\r\n<>,;\"\x00") && !strings.Contains(domain, "@") &&
		strings.Contains(domain, ".") && !strings.HasPrefix(domain, ".") && !strings.HasSuffix(domain, ".")
}

func (s *IngressSMTP) validate(add func(Pos, string, ...any)) {
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		add(s.Pos.At("listen"), "ingress.smtp.listen: %q is not host:port (e.g. 0.0.0.0:25 or 127.0.0.1:2525)", s.Listen)
	}
	open := false
	for _, n := range s.Networks {
		p, err := netip.ParsePrefix(strings.TrimSpace(n))
		if err != nil {
			add(s.Pos.At("networks"), "ingress.smtp.networks: %q is not a network in CIDR form (192.168.1.0/24)", n)
			continue
		}
		open = open || p.Bits() == 0
	}
	if open && len(s.Users) == 0 {
		add(s.Pos.At("networks"), "ingress.smtp.networks: a network of the whole Internet (/0) without users would make alertd an open relay: list your LAN, or set users")
	}
	seen := map[string]bool{}
	for i := range s.Users {
		u := &s.Users[i]
		switch {
		case u.Username == "" || strings.ContainsAny(u.Username, " \t\r\n\x00"):
			add(u.Pos.At("username"), "ingress.smtp.users[%d].username: required, without spaces", i)
		case seen[u.Username]:
			add(u.Pos.At("username"), "ingress.smtp.users[%d]: duplicate username %q", i, u.Username)
		case u.Password.IsZero():
			add(u.Pos.At("username"), "ingress.smtp.users[%d]: password or password_file is required", i)
		}
		seen[u.Username] = true
	}
	if s.MaxMessageBytes < 1 || s.MaxMessageBytes > MaxMaxMessageBytes {
		add(s.Pos.At("max_message_bytes"), "ingress.smtp.max_message_bytes: must be from 1 to %d", MaxMaxMessageBytes)
	}
	if (s.TLS.CertFile == "") != (s.TLS.KeyFile == "") {
		add(s.TLS.Pos.At(""), "ingress.smtp.tls: set both cert_file and key_file, or neither")
	}
}

func (h *IngressHTTP) validate(add func(Pos, string, ...any)) {
	if _, _, err := net.SplitHostPort(h.Listen); err != nil {
		add(h.Pos.At("listen"), "ingress.http.listen: %q is not host:port (e.g. 0.0.0.0:9465)", h.Listen)
	}
	if len(h.Tokens) == 0 {
		add(h.Pos.At("tokens"), "ingress.http.tokens: at least one token is required (devices send it as Authorization: Bearer TOKEN)")
	}
	for i, t := range h.Tokens {
		if v := t.Reveal(); v == "" || strings.ContainsAny(v, " \t\r\n\x00") {
			add(h.Pos.At("tokens"), "ingress.http.tokens[%d]: must be non-empty, without spaces or control characters", i)
		}
	}
	if h.MaxBodyBytes < 1 || h.MaxBodyBytes > DefaultMaxBodyBytes {
		add(h.Pos.At("max_body_bytes"), "ingress.http.max_body_bytes: must be from 1 to %d (rules read at most that much of a payload)", DefaultMaxBodyBytes)
	}
}
