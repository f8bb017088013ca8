package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds what Load reads: a rules file is kilobytes, not gigabytes.
const MaxFileSize = 8 << 20

// LoadFile reads, expands, defaults and validates the file at path.
// Relative paths inside it are resolved against its directory.
// The error, when not nil, is Errors (every problem, positioned; the
// partly loaded Config is returned beside it) or a plain error when the
// file cannot be read or parsed at all (Config nil).
func LoadFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	return Load(f, path)
}

// Load parses a configuration from r; file names it in errors and anchors
// relative paths ("" means the current directory).
func Load(r io.Reader, file string) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", file, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("read config %s: larger than %d bytes", file, MaxFileSize)
	}
	root, errs := parseYAML(data, file)
	if len(errs) > 0 {
		return nil, errs
	}
	d := &decoder{file: file, env: os.LookupEnv}
	cfg := &Config{File: file}
	if root != nil {
		d.decode(root, reflect.ValueOf(cfg), "")
	}
	cfg.applyDefaults()
	cfg.resolvePaths(filepath.Dir(file))
	all := d.errs
	var later Errors
	cfg.readSecrets(&later)
	cfg.validate(&later)
	for _, e := range later {
		// A value that did not decode was already reported; what
		// validation says about its zero value would only confuse.
		if !d.failed[e.Pos] {
			all.Add(e.File, e.Pos, "%s", e.Msg)
		}
	}
	if len(all) > 0 {
		// File order; a "too many errors" line stays last.
		slices.SortStableFunc(all[:min(len(all), MaxErrors)], func(a, b *Error) int {
			return cmp.Or(cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Pos.Col, b.Pos.Col))
		})
		// The partial config comes back too, so a caller can look for more
		// problems (templates) and report them all in one run.
		return cfg, all
	}
	return cfg, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML returns the single document's top node.
func parseYAML(data []byte, file string) (*yaml.Node, Errors) {
	var errs Errors
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // an empty file is the embedded default
		}
		pos, msg := syntaxError(data, err)
		errs.Add(file, pos, "%s", msg)
		return nil, errs
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		errs.Add(file, posOf(&extra), "a second YAML document is not allowed (remove the extra ---)")
		return nil, errs
	} else if !errors.Is(err, io.EOF) {
		pos, msg := syntaxError(data, err)
		errs.Add(file, pos, "%s", msg)
		return nil, errs
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

func syntaxPos(err error) Pos {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Pos{Line: line, Col: 1}
	}
	return Pos{Line: 1, Col: 1}
}

func syntaxMsg(err error) string {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		return "YAML syntax: " + m[2]
	}
	return "YAML syntax: " + strings.TrimPrefix(err.Error(), "yaml: ")
}

// applyDefaults fills what the file left out: rule keys from defaults, then
// the built-in values documented on each constant.
func (c *Config) applyDefaults() {
	defer c.SelfAlerts.defaults(c) // after defaults.to is known
	c.Ingress.applyDefaults()
	if c.Store.Backend == "" {
		c.Store.Backend = BackendBBolt
	}
	if n := c.Store.NATS; n != nil {
		n.applyDefaults()
	}
	// With store.backend: nats the devices publish to nats-server, so no
	// embedded broker is started and none gets a default address.
	if c.MQTT.Broker == "" && c.MQTT.Listen == "" && c.Store.Backend != BackendNATS {
		c.MQTT.Listen = DefaultListen
	}
	if !c.MQTT.Pos.Has("qos") {
		c.MQTT.QoS = DefaultQoS
	}
	if c.MQTT.ClientID == "" {
		host, _ := os.Hostname()
		c.MQTT.ClientID = "alertd-" + sanitizeClientID(host)
	}
	if c.Store.Path == "" {
		c.Store.Path = DefaultStorePath
	}
	if !c.Store.Pos.Has("checkpoint_interval") {
		c.Store.CheckpointInterval = Duration(DefaultCheckpointInterval)
	}
	if !c.Limits.Pos.Has("max_series") {
		c.Limits.MaxSeries = DefaultMaxSeries
	}
	if !c.HTTP.Pos.Has("listen") {
		c.HTTP.Listen = DefaultHTTPListen
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if s := c.SMTP; s != nil {
		s.applyDefaults()
	}
	for i := range c.Rules {
		r := &c.Rules[i]
		r.inherit(&c.Defaults)
		if !r.Pos.Has("max_series") && !c.Defaults.Pos.Has("max_series") {
			// Within a global limit set lower than a rule's default.
			r.MaxSeries = min(DefaultRuleMaxSeries, c.Limits.MaxSeries)
		}
	}
}

func sanitizeClientID(host string) string {
	host = strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e || r == '#' || r == '+' || r == '/' {
			return -1
		}
		return r
	}, host)
	if len(host) > 40 {
		host = host[:40]
	}
	return host
}

func (s *SMTP) applyDefaults() {
	if s.Security == "" {
		s.Security = "starttls"
		if s.Port == 465 {
			s.Security = "tls"
		}
	}
	if s.Port == 0 {
		s.Port = map[string]int{"tls": 465, "none": 25}[s.Security]
		if s.Port == 0 {
			s.Port = 587
		}
	}
	if s.OAuth2 != nil {
		s.OAuth2.defaults()
	}
	if s.Auth == "" {
		s.Auth = "auto"
	}
	if !s.Pos.Has("max_connections") {
		s.MaxConnections = 1
	}
	if !s.Pos.Has("timeout") {
		s.Timeout = Duration(DefaultSMTPTimeout)
	}
	if !s.Retry.Pos.Has("initial") {
		s.Retry.Initial = Duration(DefaultRetryInitial)
	}
	if !s.Retry.Pos.Has("max") {
		s.Retry.Max = Duration(DefaultRetryMax)
	}
	if !s.Retry.Pos.Has("give_up_after") {
		s.Retry.GiveUpAfter = Duration(DefaultRetryGiveUpAfter)
	}
}

// inherit copies every key set in defaults that r does not set itself,
// then applies the built-in defaults.
func (r *Rule) inherit(defaults *Rule) {
	rv, dv := reflect.ValueOf(r).Elem(), reflect.ValueOf(defaults).Elem()
	keys, _ := fieldsOf(rv.Type())
	if r.Pos == nil {
		r.Pos = Positions{}
	}
	for key, idx := range keys {
		if key == "name" || r.Pos.Has(key) || !defaults.Pos.Has(key) {
			continue
		}
		rv.Field(idx).Set(dv.Field(idx))
	}
	if r.Severity == "" {
		r.Severity = DefaultSeverity
	}
	if !r.Pos.Has("cooldown") && !defaults.Pos.Has("cooldown") {
		r.Cooldown = Duration(DefaultCooldown)
	}
	if !r.Pos.Has("rate_limit") && !defaults.Pos.Has("rate_limit") {
		r.RateLimit = DefaultRateLimit
	}
}

// KeyPos is where key was set for this rule, falling back to defaults when
// the value was inherited, and to the rule itself otherwise.
func (r *Rule) KeyPos(defaults *Rule, key string) Pos {
	if r.Pos.Has(key) || !defaults.Pos.Has(key) {
		return r.Pos.At(key)
	}
	return defaults.Pos.At(key)
}

func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.Store.Path)
	abs(&c.Store.Spool)
	if c.Store.Spool == "" {
		c.Store.Spool = filepath.Join(filepath.Dir(c.Store.Path), "spool")
	}
	for _, t := range []*TLS{&c.MQTT.TLS, smtpTLS(c.SMTP), natsTLS(c.Store.NATS)} {
		if t != nil {
			abs(&t.CAFile)
			abs(&t.CertFile)
			abs(&t.KeyFile)
		}
	}
	abs(&c.MQTT.PasswordFile)
	if n := c.Store.NATS; n != nil {
		abs(&n.CredentialsFile)
	}
	if s := c.Ingress.SMTP; s != nil {
		abs(&s.TLS.CertFile)
		abs(&s.TLS.KeyFile)
		for i := range s.Users {
			abs(&s.Users[i].PasswordFile)
		}
	}
	if c.SMTP != nil {
		abs(&c.SMTP.PasswordFile)
		if o := c.SMTP.OAuth2; o != nil {
			abs(&o.ClientSecretFile)
			abs(&o.RefreshTokenFile)
		}
	}
}

func natsTLS(n *NATSStore) *TLS {
	if n == nil {
		return nil
	}
	return n.TLS
}

func smtpTLS(s *SMTP) *TLS {
	if s == nil {
		return nil
	}
	return &s.TLS
}

// readSecrets loads password_file values. Both password and password_file
// is an error: which one wins would be a guess.
func (c *Config) readSecrets(errs *Errors) {
	read := func(section string, pos Positions, pw *Secret, file string) {
		if file == "" {
			return
		}
		if pos.Has("password") {
			errs.Add(c.File, pos["password_file"], "%s: set password or password_file, not both", section)
			return
		}
		data, err := readSmall(file, maxSecretFile)
		if err != nil {
			errs.Add(c.File, pos["password_file"], "%s.password_file: %v", section, unwrapPath(err))
			return
		}
		*pw = NewSecret(strings.TrimRight(string(data), "\r\n"))
		if pw.IsZero() {
			errs.Add(c.File, pos["password_file"], "%s.password_file: %s is empty", section, file)
		}
	}
	read("mqtt", c.MQTT.Pos, &c.MQTT.Password, c.MQTT.PasswordFile)
	if s := c.Ingress.SMTP; s != nil {
		for i := range s.Users {
			u := &s.Users[i]
			read(fmt.Sprintf("ingress.smtp.users[%d]", i), u.Pos, &u.Password, u.PasswordFile)
		}
	}
	if c.SMTP != nil {
		read("smtp", c.SMTP.Pos, &c.SMTP.Password, c.SMTP.PasswordFile)
		if o := c.SMTP.OAuth2; o != nil && o.ClientSecretFile != "" {
			if o.Pos.Has("client_secret") {
				errs.Add(c.File, o.Pos["client_secret_file"], "smtp.oauth2: set client_secret or client_secret_file, not both")
			} else if data, err := readSmall(o.ClientSecretFile, maxSecretFile); err != nil {
				errs.Add(c.File, o.Pos["client_secret_file"], "smtp.oauth2.client_secret_file: %v", unwrapPath(err))
			} else if o.ClientSecret = NewSecret(strings.TrimRight(string(data), "\r\n")); o.ClientSecret.IsZero() {
				errs.Add(c.File, o.Pos["client_secret_file"], "smtp.oauth2.client_secret_file: %s is empty", o.ClientSecretFile)
			}
		}
	}
}

// maxSecretFile bounds a password_file: a password is short, and a path
// such as /dev/zero must not hang the start.
const maxSecretFile = 64 << 10

func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d KiB: not a password", path, limit>>10)
	}
	return data, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("cannot read %s: %w", pe.Path, pe.Err)
	}
	return err
}
