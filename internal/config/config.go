// Package config owns alertd's configuration file: its schema, its defaults
// and its validation. Loading is strict (unknown keys are errors), expands
// ${VAR} and ${VAR:-default} from the environment in every scalar, resolves
// relative paths against the file's directory, and reports every problem it
// finds as FILE:LINE:COL: message. It builds nothing: turning rules into
// matchers and templates is the rules package's job.
package config

import (
	"time"
)

// Config is one loaded configuration file.
type Config struct {
	// File is the path the configuration was loaded from ("" for a reader).
	File string `yaml:"-"`

	MQTT    MQTT    `yaml:"mqtt"`
	SMTP    *SMTP   `yaml:"smtp"` // nil: mail is written to the spool directory
	Store   Store   `yaml:"store"`
	Limits  Limits  `yaml:"limits"`
	HTTP    HTTP    `yaml:"http"`
	Log     Log     `yaml:"log"`
	Ingress Ingress `yaml:"ingress"`
	// SelfAlerts: alertd's own trouble, mailed.
	SelfAlerts SelfAlerts `yaml:"self_alerts"`
	Defaults   Rule       `yaml:"defaults"`
	Rules      []Rule     `yaml:"rules"`
	// Timezone is the IANA zone every time in a mail is shown in
	// (Europe/Madrid); empty: the host's.
	Timezone string `yaml:"timezone"`

	Pos Positions `yaml:"-"`
}

// MQTT is the broker alertd subscribes to, or the embedded one it runs.
type MQTT struct {
	// Broker is the URL of an external broker. Empty: alertd runs its own
	// embedded broker on Listen, so a fresh machine works with no setup.
	Broker string `yaml:"broker"`
	// Listen is the embedded broker's address. The default port is not 1883
	// so that the quick start works beside a Mosquitto that already holds it.
	Listen       string `yaml:"listen"`
	ClientID     string `yaml:"client_id"`
	Username     string `yaml:"username"`
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	QoS          int    `yaml:"qos"`
	TLS          TLS    `yaml:"tls"`
	// AllowInsecureAuth allows a password over a broker connection without
	// TLS (tcp://, ws://) to a host other than this machine.
	AllowInsecureAuth bool `yaml:"allow_insecure_auth"`
	// StateTopic, when set, is where alertd publishes each alert's state
	// (retained JSON on <state_topic>/<rule>/<series topic>).
	StateTopic string `yaml:"state_topic"`
	// HomeAssistantDiscovery publishes a retained Home Assistant MQTT
	// discovery config for each series, so it appears as a "problem"
	// binary_sensor fed by state_topic, available while alertd is online
	// (<state_topic>/status, its last will). Needs state_topic.
	HomeAssistantDiscovery bool `yaml:"home_assistant_discovery"`
	// DiscoveryPrefix is Home Assistant's discovery prefix.
	DiscoveryPrefix string `yaml:"discovery_prefix"`

	Pos Positions `yaml:"-"`
}

// TLS configures certificate verification and client certificates.
type TLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`

	Pos Positions `yaml:"-"`
}

// SMTP is the submission server alertd delivers through.
type SMTP struct {
	Host              string   `yaml:"host"`
	Port              int      `yaml:"port"`
	Security          string   `yaml:"security"`
	Auth              string   `yaml:"auth"`
	Username          string   `yaml:"username"`
	Password          Secret   `yaml:"password"`
	PasswordFile      string   `yaml:"password_file"`
	AllowInsecureAuth bool     `yaml:"allow_insecure_auth"`
	From              string   `yaml:"from"`
	Helo              string   `yaml:"helo"`
	Timeout           Duration `yaml:"timeout"`
	// MaxConnections is how many sessions alertd opens to the server at
	// once. 1 (the default) sends strictly in order and suits consumer
	// mail providers, which limit parallel logins; a relay of one's own
	// can take more to drain a backlog faster.
	MaxConnections int   `yaml:"max_connections"`
	TLS            TLS   `yaml:"tls"`
	Retry          Retry `yaml:"retry"`
	// OAuth2 gives the tokens for auth: xoauth2 and oauthbearer.
	OAuth2 *OAuth2 `yaml:"oauth2"`

	Pos Positions `yaml:"-"`
}

// Retry is the backoff for deliveries the server answered with 4xx, or
// that failed on the network or at authentication.
type Retry struct {
	Initial     Duration `yaml:"initial"`
	Max         Duration `yaml:"max"`
	GiveUpAfter Duration `yaml:"give_up_after"`

	Pos Positions `yaml:"-"`
}

// Store is where alertd keeps its state.
type Store struct {
	// Path is the bbolt file holding the outbox, dedupe and rate-limit state.
	Path string `yaml:"path"`
	// Spool receives one .eml file per mail when smtp is not configured.
	Spool string `yaml:"spool"`
	// CheckpointInterval is how often silence rules' last-seen times are
	// written (and evicted series deleted); a crash forgets at most this
	// much of them.
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
	// Backend is where alert state, dedupe windows and the outbox live:
	// "bbolt" (the default: the file at Path) or "nats" (JetStream, shared
	// by several alertd instances that split the topics into partitions;
	// NATS holds the connection settings).
	Backend string `yaml:"backend"`
	// NATS is the JetStream cluster of store.backend: nats.
	NATS *NATSStore `yaml:"nats"`

	Pos Positions `yaml:"-"`
}

// Store backends.
const (
	BackendBBolt = "bbolt"
	BackendNATS  = "nats"
)

// NATSStore is the JetStream cluster alertd instances share in
// store.backend: nats. Every instance of one deployment must agree on
// Partitions, Replicas and Prefix; Instance differs.
type NATSStore struct {
	// URLs of the NATS servers (nats://host:4222, tls://host:4222).
	URLs []string `yaml:"urls"`
	// CredentialsFile is a NATS .creds file (JWT and NKey seed).
	CredentialsFile string `yaml:"credentials_file"`
	// TLS for the connection; verification is on unless it is turned off.
	TLS *TLS `yaml:"tls"`
	// Partitions the topics are hashed into (default 16).
	Partitions int `yaml:"partitions"`
	// Replicas of every stream and bucket (default 3; 1 on a single node).
	Replicas int `yaml:"replicas"`
	// Prefix of every subject, stream and bucket (default "alertd").
	Prefix string `yaml:"prefix"`
	// Instance names this alertd among its peers (default host-pid).
	Instance string `yaml:"instance"`
	// LeaseTTL is how long a dead instance's partitions wait for a new
	// owner (default 5s).
	LeaseTTL Duration `yaml:"lease_ttl"`

	Pos Positions `yaml:"-"`
}

// Limits bound what alertd keeps in memory, whatever it is sent.
type Limits struct {
	// MaxSeries bounds the series (rule × concrete topic) tracked at once,
	// all rules together. Each rule also has its own max_series.
	MaxSeries int `yaml:"max_series"`

	Pos Positions `yaml:"-"`
}

// HTTP is the metrics and health endpoint.
type HTTP struct {
	// Listen defaults to loopback: metrics are not for the whole LAN unless
	// the operator says so. "off" or "" after an explicit key disables it.
	Listen string `yaml:"listen"`
	// ExternalURL is where people reach the status page
	// (https://pi.lan:9464/), for the link in every mail; empty: no link.
	ExternalURL string `yaml:"external_url"`

	Pos Positions `yaml:"-"`
}

// Log configures alertd's own logging.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json

	Pos Positions `yaml:"-"`
}

// Rule is one alerting rule. The same schema serves for defaults: a key set
// in defaults applies to every rule that does not set it.
type Rule struct {
	Name      string   `yaml:"name"`
	Topic     string   `yaml:"topic"`
	Field     string   `yaml:"field"`
	Above     *float64 `yaml:"above"`
	Below     *float64 `yaml:"below"`
	Equals    *Scalar  `yaml:"equals"`
	NotEquals *Scalar  `yaml:"not_equals"`
	// When is an expression over the payload's fields (expr-lang), for
	// conditions thresholds cannot say: 'temp > 30 && hum < 20'.
	When      string   `yaml:"when"`
	Severity  string   `yaml:"severity"`
	To        []string `yaml:"to"`
	Subject   string   `yaml:"subject"`
	Body      string   `yaml:"body"`
	Cooldown  Duration `yaml:"cooldown"`
	RateLimit Rate     `yaml:"rate_limit"`

	// The alert's life: the condition must hold For before firing; a
	// firing threshold alert clears only Hysteresis inside its threshold;
	// NotifyResolved (default true) mails when it clears; Repeat reminds
	// while it keeps firing (0: never).
	For            Duration `yaml:"for"`
	Hysteresis     *float64 `yaml:"hysteresis"`
	NotifyResolved *bool    `yaml:"notify_resolved"`
	// Thread (default true) gives an episode's later mails (reminders,
	// resolved) the subject of its first, prefixed "Re: ", and a reply's
	// headers, so Gmail and Outlook show them as one conversation; the
	// state is the first line of each mail. false: each mail's own subject.
	Thread *bool    `yaml:"thread"`
	Repeat Duration `yaml:"repeat"`
	// GroupWait bundles the rule's notifications that arise within this
	// window into one mail (0: one mail per notification).
	GroupWait Duration `yaml:"group_wait"`
	// SilentFor makes the rule a silence (deadman) rule: it fires for each
	// series that reported before and then stayed quiet this long.
	SilentFor Duration `yaml:"silent_for"`
	// MaxSeries bounds the rule's series, so that junk topics on one
	// rule's filter cannot take the room of every other rule's devices.
	MaxSeries int `yaml:"max_series"`

	// Pos holds where each key was set, for errors found after loading.
	Pos Positions `yaml:"-"`
}

// Defaults, each with its reason.
const (
	// DefaultListen is the embedded broker's quick-start address: loopback
	// only, and not 1883 so it never collides with an installed Mosquitto.
	DefaultListen = "127.0.0.1:18830"
	// DefaultHTTPListen serves /metrics and /healthz on loopback only
	// (9464 is the port Prometheus' registry assigns to exporters of this kind).
	DefaultHTTPListen = "127.0.0.1:9464"
	DefaultStorePath  = "alertd.db"
	DefaultQoS        = 1 // QoS 1 with a persistent session: readings survive a short outage
	// DefaultSMTPTimeout bounds dial and each command; RFC 5321's 5 minutes
	// would hold an alert for far too long behind a stalled server.
	DefaultSMTPTimeout = 30 * time.Second
	// Retry pacing: first retry soon enough to matter for an alert, the cap
	// low enough that a returning server is noticed within minutes, and a
	// day of trying before giving up, like a mail server's queue lifetime.
	DefaultRetryInitial     = 30 * time.Second
	DefaultRetryMax         = 10 * time.Minute
	DefaultRetryGiveUpAfter = 24 * time.Hour
	DefaultSeverity         = "warning"
	// DefaultCooldown: at most one mail per series per 10 minutes unless
	// the rule says otherwise, so a noisy sensor cannot flood an inbox.
	DefaultCooldown = 10 * time.Minute
	// DefaultMaxSeries (limits.max_series) is ten times the largest fleet
	// alertd is sized for (10,000 devices): room for several rules per
	// device, and a bound on memory whatever topics a client invents.
	DefaultMaxSeries = 100_000
	// MaxMaxSeries bounds limits.max_series: far beyond any fleet, a
	// ceiling for a typo with one zero too many.
	MaxMaxSeries = 10_000_000
	// DefaultRuleMaxSeries (a rule's max_series) is twice the largest fleet
	// alertd is sized for: every device of one fleet fits with room to
	// spare, and junk topics on one rule's filter fill a fifth of
	// limits.max_series, never all of it.
	DefaultRuleMaxSeries = 20_000
	// DefaultCheckpointInterval (store.checkpoint_interval): a crash
	// forgets at most 30 s of last-seen times, and an SD card sees at most
	// two small commits a minute from them.
	DefaultCheckpointInterval = 30 * time.Second
	// MinCheckpointInterval: more often than once a second would spend
	// fsyncs on last-seen times that are only used minutes later.
	MinCheckpointInterval = time.Second
)

// DefaultRateLimit caps mails per rule when neither the rule nor defaults set
// one: generous for real incidents, a ceiling for a misconfigured rule.
var DefaultRateLimit = Rate{N: 20, Per: time.Hour}
