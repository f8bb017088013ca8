package cluster

import (
	"testing"

	"github.com/alertd/alertd/internal/config"
)

// The configuration keeps its own copy of the cluster's defaults and
// bounds (importing this package would link nats.go into everything that
// reads a file); they must stay the same.
func TestConfigDefaultsAgree(t *testing.T) {
	for _, c := range []struct {
		what      string
		cfg, here any
	}{
		{"partitions", config.DefaultNATSPartitions, DefaultPartitions},
		{"replicas", config.DefaultNATSReplicas, DefaultReplicas},
		{"prefix", config.DefaultNATSPrefix, DefaultPrefix},
		{"lease TTL", config.DefaultNATSLeaseTTL, DefaultLeaseTTL},
		{"most partitions", config.MaxNATSPartitions, maxPartitions},
	} {
		if c.cfg != c.here {
			t.Errorf("%s: config says %v, cluster %v", c.what, c.cfg, c.here)
		}
	}
	for _, tok := range []string{"alertd", "node-1", "a_b", "a.b", "a b", "", "é"} {
		if config.NATSToken(tok) != keyToken.MatchString(tok) {
			t.Errorf("%q: config and cluster disagree on a prefix or instance", tok)
		}
	}
}
