package config

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// store.nats defaults. They are the cluster package's own (its
// Default* constants, whose reasons it gives); config does not import it,
// which would link nats.go into everything that reads a configuration, so
// a test there checks that the two agree.
const (
	DefaultNATSPartitions = 16
	DefaultNATSReplicas   = 3
	DefaultNATSPrefix     = "alertd"
	DefaultNATSLeaseTTL   = 5 * time.Second
	// MaxNATSPartitions keeps a lease renewal round (one KV write per held
	// partition every lease_ttl/3) far below what a small cluster serves.
	MaxNATSPartitions = 1024
	// MaxNATSReplicas is JetStream's own limit on a stream's replicas.
	MaxNATSReplicas = 5
	// MinNATSLeaseTTL is nats-server's minimum for the expiry markers the
	// instances watch to see a peer gone.
	MinNATSLeaseTTL = time.Second
)

// natsToken is what a KV key token allows, and so a prefix or an instance.
var natsToken = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// NATSToken reports whether s may be a store.nats prefix or instance.
func NATSToken(s string) bool { return natsToken.MatchString(s) }

func (n *NATSStore) applyDefaults() {
	if !n.Pos.Has("partitions") {
		n.Partitions = DefaultNATSPartitions
	}
	if !n.Pos.Has("replicas") {
		n.Replicas = DefaultNATSReplicas
	}
	if !n.Pos.Has("prefix") {
		n.Prefix = DefaultNATSPrefix
	}
	if !n.Pos.Has("lease_ttl") {
		n.LeaseTTL = Duration(DefaultNATSLeaseTTL)
	}
	// Instance stays empty: the host name and process id are decided when
	// alertd starts, not when a file is checked.
}

// validateStore checks store.backend and, for nats, everything the
// cluster would otherwise refuse only at start, without a position.
func (c *Config) validateStore(add func(Pos, string, ...any)) {
	s := &c.Store
	switch s.Backend {
	case BackendBBolt:
		if s.NATS != nil {
			add(s.Pos.At("nats"), "store.nats is set but store.backend is bbolt: set store.backend: nats or remove it")
		}
		return
	case BackendNATS:
	default:
		add(s.Pos.At("backend"), "store.backend: %q is not one of bbolt, nats", s.Backend)
		return
	}
	if s.NATS == nil {
		add(s.Pos.At("backend"), "store.backend: nats needs a store.nats section with urls (such as nats://nats1.example.org:4222)")
	} else {
		s.NATS.validate(add)
	}
	if c.MQTT.Broker != "" {
		add(c.MQTT.Pos.At("broker"), "mqtt.broker: alertd does not subscribe to a broker with store.backend: nats: "+
			"devices publish to nats-server's MQTT listener (or a broker bridged to it); remove mqtt.broker")
	}
	if c.MQTT.Broker == "" && c.MQTT.Pos.Has("listen") {
		add(c.MQTT.Pos.At("listen"), "mqtt.listen: the embedded MQTT broker does not run with store.backend: nats: "+
			"devices publish to nats-server's MQTT listener; remove mqtt.listen")
	}
	// What cluster mode does not run yet is refused, not ignored.
	notYet := "is not supported with store.backend: nats yet"
	if c.Ingress.SMTP != nil {
		add(c.Ingress.Pos.At("smtp"), "ingress.smtp %s (run a single alertd for the devices that mail)", notYet)
	}
	if c.Ingress.HTTP != nil {
		add(c.Ingress.Pos.At("http"), "ingress.http %s (run a single alertd for the devices that post)", notYet)
	}
	if c.MQTT.StateTopic != "" {
		add(c.MQTT.Pos.At("state_topic"), "mqtt.state_topic %s", notYet)
	}
	if c.MQTT.HomeAssistantDiscovery {
		add(c.MQTT.Pos.At("home_assistant_discovery"), "mqtt.home_assistant_discovery %s", notYet)
	}
	for i := range c.Rules {
		r := &c.Rules[i]
		label := fmt.Sprintf("rules[%d]", i)
		if r.Name != "" {
			label = fmt.Sprintf("rule %q", r.Name)
		}
		switch {
		case r.Topic == "#":
			add(r.KeyPos(&c.Defaults, "topic"), "%s: topic \"#\" cannot be used with store.backend: nats: it would capture "+
				"nats-server's own $MQTT subjects; name a first level such as \"sensors/#\"", label)
		case strings.ContainsAny(r.Topic, " \t\n\r\f\x7f"):
			add(r.KeyPos(&c.Defaults, "topic"), "%s: topic %q has whitespace, which nats-server refuses in a topic: "+
				"no reading could ever match it", label, r.Topic)
		}
	}
}

func (n *NATSStore) validate(add func(Pos, string, ...any)) {
	if len(n.URLs) == 0 {
		add(n.Pos.At("urls"), "store.nats.urls: at least one URL is required, such as nats://nats1.example.org:4222")
	}
	for _, raw := range n.URLs {
		if msg := checkNATSURL(raw); msg != "" {
			add(n.Pos.At("urls"), "store.nats.urls: %s", msg)
		}
	}
	if n.CredentialsFile != "" {
		data, err := readSmall(n.CredentialsFile, maxSecretFile)
		switch {
		case err != nil:
			add(n.Pos.At("credentials_file"), "store.nats.credentials_file: %v", unwrapPath(err))
		case strings.TrimSpace(string(data)) == "":
			add(n.Pos.At("credentials_file"), "store.nats.credentials_file: %s is empty", n.CredentialsFile)
		}
	}
	if n.TLS != nil {
		n.TLS.validate("store.nats.tls", add)
	}
	if n.Partitions < 1 || n.Partitions > MaxNATSPartitions {
		add(n.Pos.At("partitions"), "store.nats.partitions: %d is not between 1 and %d", n.Partitions, MaxNATSPartitions)
	}
	if n.Replicas < 1 || n.Replicas > MaxNATSReplicas {
		add(n.Pos.At("replicas"), "store.nats.replicas: %d is not between 1 and %d (1 on a single NATS node, 3 to survive losing one)",
			n.Replicas, MaxNATSReplicas)
	}
	if !NATSToken(n.Prefix) {
		add(n.Pos.At("prefix"), "store.nats.prefix: %q may use only letters, digits, '_' and '-'", n.Prefix)
	}
	if n.Instance != "" && !NATSToken(n.Instance) {
		add(n.Pos.At("instance"), "store.nats.instance: %q may use only letters, digits, '_' and '-'", n.Instance)
	}
	if n.LeaseTTL.D() < MinNATSLeaseTTL {
		add(n.Pos.At("lease_ttl"), "store.nats.lease_ttl: %s is less than %s", n.LeaseTTL, MinNATSLeaseTTL)
	}
}

// checkNATSURL says what is wrong with one server URL, or "". It never
// repeats a URL that carries credentials.
func checkNATSURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case (err == nil && u.User != nil) || strings.Contains(raw, "@"):
		// Also when it does not parse: what precedes '@' may be a password.
		return "put credentials in store.nats.credentials_file, not in the URL"
	case strings.Contains(raw, ","):
		return fmt.Sprintf("%q: one URL per list item (urls: [nats://a:4222, nats://b:4222])", raw)
	case err != nil || u.Host == "":
		return fmt.Sprintf("%q is not a URL like nats://host:4222", raw)
	case !oneOf(u.Scheme, "nats", "tls", "ws", "wss"):
		return fmt.Sprintf("%q: scheme %q is not one of nats, tls, ws, wss", raw, u.Scheme)
	case u.Hostname() == "":
		return fmt.Sprintf("%q has no host", raw)
	case u.Port() == "" || !validPort(u.Port()) || u.Port() == "0":
		return fmt.Sprintf("%q has no port, such as nats://%s:4222", raw, u.Hostname())
	}
	return ""
}

// NATSURLWantsTLS reports whether a store.nats URL asks for TLS by its
// scheme (tls://, wss://).
func NATSURLWantsTLS(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "tls" || u.Scheme == "wss")
}
