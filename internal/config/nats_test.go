package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestNATSDefaults: the smallest clustered file gets the cluster's
// defaults, no embedded broker, and an instance name left to run time.
func TestNATSDefaults(t *testing.T) {
	cfg, err := Load(strings.NewReader(`
store:
  backend: nats
  nats: {urls: [nats://127.0.0.1:4222]}
defaults: {to: [ops@example.org]}
rules:
  - {name: hot, topic: "sensors/+/telemetry", field: temp, above: 30}
`), "alertd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Store.NATS
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"store.backend", cfg.Store.Backend, "nats"},
		{"store.nats.partitions", n.Partitions, 16},
		{"store.nats.replicas", n.Replicas, 3},
		{"store.nats.prefix", n.Prefix, "alertd"},
		{"store.nats.instance", n.Instance, ""},
		{"store.nats.lease_ttl", n.LeaseTTL.D(), 5 * time.Second},
		{"store.nats.credentials_file", n.CredentialsFile, ""},
		{"store.nats.tls", n.TLS == nil, true},
		{"mqtt.listen (no embedded broker)", cfg.MQTT.Listen, ""},
		{"mqtt.broker", cfg.MQTT.Broker, ""},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}

	single, err := Load(strings.NewReader("defaults: {to: [ops@example.org]}\nrules: [{name: hot, topic: a/b, above: 1}]\n"), "alertd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if single.Store.Backend != BackendBBolt || single.Store.NATS != nil || single.MQTT.Listen != DefaultListen {
		t.Errorf("without store.backend: backend %q, nats %+v, mqtt.listen %q; want bbolt, nil, %s",
			single.Store.Backend, single.Store.NATS, single.MQTT.Listen, DefaultListen)
	}
}

// TestNATSFullConfig: every key of store.nats arrives, relative files
// resolved against the configuration's directory.
func TestNATSFullConfig(t *testing.T) {
	cfg, err := LoadFile("testdata/nats.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("testdata")
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	n := cfg.Store.NATS
	if !slices.Equal(n.URLs, []string{"tls://nats1.example.org:4222", "nats://10.0.0.2:4222", "wss://nats3.example.org:443"}) {
		t.Errorf("urls %v", n.URLs)
	}
	if abs(n.CredentialsFile) != filepath.Join(dir, "secrets", "nats.creds") {
		t.Errorf("credentials_file %q", n.CredentialsFile)
	}
	if n.TLS == nil || abs(n.TLS.CAFile) != filepath.Join(dir, "certs", "nats-ca.pem") ||
		abs(n.TLS.CertFile) != filepath.Join(dir, "certs", "alertd.pem") || abs(n.TLS.KeyFile) != filepath.Join(dir, "certs", "alertd.key") {
		t.Errorf("tls %+v", n.TLS)
	}
	if n.Partitions != 32 || n.Replicas != 5 || n.Prefix != "alertd_prod" || n.Instance != "node-1" || n.LeaseTTL.D() != 10*time.Second {
		t.Errorf("store.nats %+v", n)
	}
}

func TestNATSURLs(t *testing.T) {
	for _, c := range []struct {
		url  string
		want string // "" when good
	}{
		{"nats://127.0.0.1:4222", ""},
		{"tls://nats.example.org:4222", ""},
		{"ws://[::1]:8080", ""},
		{"wss://nats.example.org:443", ""},
		{"nats://nats.example.org", "has no port"},
		{"nats://nats.example.org:0", "has no port"},
		{"nats://:4222", "has no host"},
		{"nats.example.org:4222", "is not a URL like nats://host:4222"},
		{"mqtt://nats.example.org:1883", `scheme "mqtt" is not one of nats, tls, ws, wss`},
		{"nats://alertd:s3cret@nats:4222", "put credentials in store.nats.credentials_file"},
		{"nats://tok3n@nats:4222", "put credentials in store.nats.credentials_file"},
		// URLs that do not parse, with a password in them.
		{"nats://alice:s3cr%et@nats:4222", "put credentials in store.nats.credentials_file"},
		{"nats://bob:s3cret@nats:42x", "put credentials in store.nats.credentials_file"},
		{"nats://a:s3cret@b@c:4222,nats://d:4222", "put credentials in store.nats.credentials_file"},
	} {
		got := checkNATSURL(c.url)
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", c.url, got, c.want)
		}
		if strings.Contains(got, "s3cret") || strings.Contains(got, "tok3n") {
			t.Errorf("%s: the message repeats the credentials: %s", c.url, got)
		}
	}
}

// Every instance of a deployment must agree on store.nats, and the
// connection is made once: a reload that changes it is refused.
func TestNATSStoreNeedsARestart(t *testing.T) {
	load := func(ttl string) *Config {
		t.Helper()
		cfg, err := Load(strings.NewReader(`store:
  backend: nats
  nats:
    urls: [nats://127.0.0.1:4222]
    lease_ttl: `+ttl+`
defaults: {to: [ops@example.org]}
rules: [{name: hot, topic: a/b, above: 1}]
`), "alertd.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if errs := Unreloadable(load("5s"), load("5s")); len(errs) != 0 {
		t.Errorf("the same file: %v", errs)
	}
	errs := Unreloadable(load("5s"), load("10s"))
	if len(errs) != 1 || errs[0].Error() != "alertd.yaml:4:5: store.nats.lease_ttl changed: a reload cannot apply it; restart alertd (nothing of this file was applied)" {
		t.Errorf("lease_ttl changed: %v", errs)
	}
}
