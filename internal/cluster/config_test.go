package cluster

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c := fleetConfig(0).withDefaultsT(t)
	if c.Partitions != 16 || c.Replicas != 3 || c.Prefix != "alertd" || c.LeaseTTL != 5*time.Second || c.AckWait != c.LeaseTTL {
		t.Errorf("defaults: %+v", c)
	}
	if c.Instance == "" || !keyToken.MatchString(c.Instance) {
		t.Errorf("default instance %q is not a key token", c.Instance)
	}
	// The renewal cadence leaves room for two failed rounds inside the
	// validity, and the validity ends before the server's expiry.
	if !(2*c.renewEvery() < c.validity() && c.validity() < c.LeaseTTL) {
		t.Errorf("renew every %v, valid for %v, TTL %v", c.renewEvery(), c.validity(), c.LeaseTTL)
	}
}

func TestConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no JetStream", func(c *Config) { c.JS = nil }, "no JetStream"},
		{"no filters", func(c *Config) { c.Filters = nil }, "no topic filters"},
		{"# alone", func(c *Config) { c.Filters = []string{"#"} }, `filter "#"`},
		{"whitespace", func(c *Config) { c.Filters = []string{"a b/c"} }, "whitespace"},
		{"instance", func(c *Config) { c.Instance = "a.b" }, "instance"},
		{"TTL", func(c *Config) { c.LeaseTTL = 500 * time.Millisecond }, "at least 1s"},
		{"partitions", func(c *Config) { c.Partitions = 5000 }, "partitions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fleetConfig(1)
			c.JS = noJS{}
			tc.edit(&c)
			_, err := c.withDefaults()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
