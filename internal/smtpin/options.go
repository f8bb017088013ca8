package smtpin

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"
)

// Options configure the listener; the zero value of each field takes the
// default its comment gives. Keys in quotes are the config file's, under
// ingress.smtp (relay_to sits under ingress).
type Options struct {
	Listen string // "listen": host:port; required (127.0.0.1:0 in tests)
	// "hostname": the name in the greeting, in Received and in created
	// Message-IDs, and alertd's own mail domain: a recipient at it is
	// alertd itself. Default: the machine's host name.
	Hostname string
	// "networks": who may connect at all. Default: loopback only, the
	// one network that is safe without thinking.
	Networks []netip.Prefix
	// "users": when set, every client must AUTH (PLAIN or LOGIN) before
	// MAIL.
	Users Users
	// "relay_to": recipients a mail may be relayed to, each an address
	// ("ops@example.org") or a domain ("@example.org"), compared without
	// regard to case. Nothing else is ever relayed.
	RelayTo []string
	// From is the address the relayed copies are sent as (alertd's
	// smtp.from): providers such as Gmail and Office 365 refuse any other.
	// Required when RelayTo is set.
	From string
	// "max_message_bytes": larger mails get 552 5.3.4; advertised in EHLO
	// SIZE. Default 1 MiB: device mails are a few hundred bytes, and a
	// connection holds its mail in memory until the Sink returns.
	MaxMessageBytes int64
	// "tls": offers STARTTLS for clients that can; never required, since
	// LAN devices rarely can. The wiring loads cert_file and key_file.
	TLS *tls.Config

	// MaxConns bounds connections at once; more get 421. Default 32, a
	// house full of devices with room to spare on a Raspberry Pi.
	MaxConns int
	// MaxRecipients bounds the recipients of one mail; more get 452.
	// Default 100, the least RFC 5321 §4.5.3.1.8 lets a server accept.
	MaxRecipients int
	// MaxLineLength bounds a command or text line; a longer one ends the
	// session. Default 2000, twice RFC 5321's 1000 (§4.5.3.1.6), as
	// go-smtp does, for sloppy clients.
	MaxLineLength int
	// MaxTextBytes caps the text in the event payload. Default 8 KiB:
	// rules read a value or a word, not a novel.
	MaxTextBytes int

	// IdleTimeout is how long a command line may take to arrive, counted
	// from when alertd starts waiting for it; a client that is silent or
	// drips bytes (slow loris) is ended with 421. Default 5 minutes, the
	// server timeout of RFC 5321 §4.5.3.2.7, which leaves time for a
	// session typed by hand in telnet.
	IdleTimeout time.Duration
	// DataTimeout is how long the whole message after DATA may take.
	// Default 10 minutes, RFC 5321 §4.5.3.2.6's wait for the final dot.
	DataTimeout time.Duration
	// WriteTimeout bounds each reply to a client that does not read.
	// Default 1 minute.
	WriteTimeout time.Duration
	// AcceptTimeout bounds Sink.Accept; past it the device hears 451 and
	// retries. Default 2 minutes, well inside the 10 minutes a client
	// waits for the reply to the final dot.
	AcceptTimeout time.Duration
	// ShutdownGrace is how long Run, when its context ends, lets sessions
	// finish before closing them. Default 10 seconds.
	ShutdownGrace time.Duration

	Log *slog.Logger // default: discard
	// Count is called once per mail or refusal, on the connection's
	// goroutine, so it must not block. Default: nothing.
	Count func(r Result)
	Now   func() time.Time // default time.Now
}

// ConfigError is an Options field alertd cannot run with.
type ConfigError struct {
	Field string // the config key, e.g. "relay_to"
	Err   error
}

func (e *ConfigError) Error() string { return "smtp ingress " + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// defaultNetworks is loopback, IPv4 and IPv6.
var defaultNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if len(o.Networks) == 0 {
		o.Networks = defaultNetworks
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 1 << 20
	}
	o.MaxConns = cmp0(o.MaxConns, 32)
	o.MaxRecipients = cmp0(o.MaxRecipients, 100)
	o.MaxLineLength = cmp0(o.MaxLineLength, 2000)
	o.MaxTextBytes = cmp0(o.MaxTextBytes, 8<<10)
	def(&o.IdleTimeout, 5*time.Minute)
	def(&o.DataTimeout, 10*time.Minute)
	def(&o.WriteTimeout, time.Minute)
	def(&o.AcceptTimeout, 2*time.Minute)
	def(&o.ShutdownGrace, 10*time.Second)
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Count == nil {
		o.Count = func(Result) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	o.Hostname = strings.TrimSuffix(strings.ToLower(o.Hostname), ".")
	return o
}

func cmp0(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// Validate reports the first field alertd cannot run with, as a
// *ConfigError, after applying the defaults; it binds nothing, so a
// config check can call it.
func (o Options) Validate() error {
	o = o.withDefaults()
	_, err := o.compile()
	return err
}

// policy is the checked, compiled form of the Options that decide who may
// do what.
type policy struct {
	networks []netip.Prefix
	relay    relayTo
	creds    *credentials // nil: no AUTH
	from     *mail.Address
}

func (o Options) compile() (*policy, error) {
	p := &policy{networks: o.Networks}
	if o.Listen == "" {
		return nil, &ConfigError{"listen", errors.New("an address such as 127.0.0.1:2525 is required")}
	}
	if !validHostname(o.Hostname) {
		return nil, &ConfigError{"hostname", fmt.Errorf("%q is not a host name (and none could be read from the system)", o.Hostname)}
	}
	for i, n := range o.Networks {
		if !n.IsValid() {
			return nil, &ConfigError{fmt.Sprintf("networks[%d]", i), errors.New("not a network prefix")}
		}
	}
	var err error
	if p.relay, err = compileRelayTo(o.RelayTo); err != nil {
		return nil, err
	}
	if len(o.RelayTo) > 0 {
		if p.from, err = mail.ParseAddress(o.From); err != nil {
			return nil, &ConfigError{"from", fmt.Errorf("%q: relayed mail needs alertd's own sender address: %w", o.From, err)}
		}
	}
	if p.creds, err = newCredentials(o.Users); err != nil {
		return nil, err
	}
	return p, nil
}

// validHostname accepts a DNS name of letters, digits, '-', '_' and dots.
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	return !strings.ContainsFunc(h, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_')
	})
}

// allowed reports whether ip may connect. An IPv4 client reaching a
// dual-stack listener shows as ::ffff:a.b.c.d and is matched as a.b.c.d.
func (p *policy) allowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	return slices.ContainsFunc(p.networks, func(n netip.Prefix) bool { return n.Contains(ip) })
}
