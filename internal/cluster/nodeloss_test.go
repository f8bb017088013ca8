package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/cluster/natstest"
)

// (d) With R3 streams, losing the NATS node that leads the ingest stream,
// and later the one that leads the lease bucket, pauses ingest for an
// election and then it continues: readings published before each loss and
// after each recovery are all handled, and the partitions stay owned.
// Readings published during an election are counted, not asserted:
// nats-server PUBACKs a QoS 1 reading once its own $MQTT_msgs stream has
// it, and our stream's copy is a plain publish, dropped while our stream
// has no leader (docs/cluster.md).
func TestNATSNodeLoss(t *testing.T) {
	c := natstest.Start(t, 3)
	cfg := fleetConfig(3)
	cfg.Partitions = 4 // a quicker start; the leases are the same
	l := newLedger()
	a := startInstance(t, c, cfg, "a", l.handler("a", nil))
	b := startInstance(t, c, cfg, "b", l.handler("b", nil))
	eventually(t, 20*time.Second, "a and b balanced: "+owned(a, b), func() bool { return balanced(4, a, b) })
	_, js := connect(t, c)
	topics := fleetTopics(100)

	for round, stream := range []string{
		"alertd_ingest",     // every reading goes through its leader
		"KV_alertd_cluster", // every lease renewal goes through its leader
	} {
		s, err := js.Stream(context.Background(), stream)
		if err != nil {
			t.Fatal(err)
		}
		victim := c.Index(s.CachedInfo().Cluster.Leader)
		if victim < 0 {
			t.Fatalf("%s leader %q is not a node of the cluster", stream, s.CachedInfo().Cluster.Leader)
		}
		// The device stays on a surviving node; its own reconnection is
		// paho's business, not alertd's.
		dev := newDevice(t, fmt.Sprintf("dev%d", round), c.MQTTURL((victim+1)%3))
		msgs, before := readings(fmt.Sprintf("before %d", round), topics)
		dev.mustPublish(t, msgs)
		eventually(t, 20*time.Second, "readings before the loss handled", func() bool { return len(l.missing(before)) == 0 })

		start := time.Now()
		c.Kill(victim)
		resumed, gap, lost := untilResumed(t, l, dev, topics, start)
		msgs, after := readings(fmt.Sprintf("after %d", round), topics)
		dev.mustPublish(t, msgs)
		eventually(t, 20*time.Second, "readings after the recovery handled", func() bool { return len(l.missing(after)) == 0 })
		t.Logf("lost node %d (leader of %s): ingest resumed after %v; %d of %d readings PUBACKed meanwhile never reached alertd",
			victim, stream, resumed.Round(time.Millisecond), len(l.missing(lost)), gap)
		eventually(t, 20*time.Second, "partitions owned after the loss: "+owned(a, b), func() bool { return balanced(4, a, b) })

		c.Restart(victim)
		c.WaitHealthy()
	}
}

// untilResumed publishes one reading every 100 ms until one published
// after start is handled: that is when ingest has resumed. It returns how
// many were PUBACKed and which.
func untilResumed(t *testing.T, l *ledger, dev *device, topics []string, start time.Time) (time.Duration, int, []string) {
	t.Helper()
	var acked []string
	for k := 0; ; k++ {
		if time.Since(start) > 30*time.Second {
			t.Fatal("ingest did not resume within 30s of the loss")
		}
		msg := [2]string{topics[k%len(topics)], fmt.Sprintf(`{"gap":%d,"at":%q}`, k, start)}
		if dev.publish([][2]string{msg}) == nil {
			acked = append(acked, msg[1])
		}
		for _, p := range acked {
			if l.ackedBy(p) != "" {
				return time.Since(start), len(acked), acked
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}
