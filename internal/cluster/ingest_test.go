package cluster

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/cluster/natstest"
)

func fleetConfig(replicas int) Config {
	return Config{Filters: []string{"fleet/+/telemetry"}, Replicas: replicas}
}

// (a) Readings published at QoS 1 on 1,000 topics through nats-server's
// MQTT listener all arrive, with the device's topic, and every topic in
// one partition: the one PartitionOf computes, so the stream's transform
// hashes the whole subject as documented.
func TestMQTTReadingsKeepTheirPartition(t *testing.T) {
	// One node: every QoS 1 reading is two stream writes (nats-server's
	// $MQTT_msgs and ours), and what is tested here is the partitioning,
	// not the replication (TestTakeoverAfterCrash and TestNATSNodeLoss run
	// on three).
	c := natstest.Start(t, 1)
	l := newLedger()
	a := startInstance(t, c, fleetConfig(1), "a", l.handler("a", nil))
	took := eventually(t, 20*time.Second, "one instance owns all 16 partitions", func() bool { return balanced(16, a) })
	t.Logf("stream, 16 consumers and leases ready in %v", took.Round(time.Millisecond))

	topics := fleetTopics(1000)
	topics = append(topics, "fleet/dev.with.dots/telemetry", "fleet//telemetry")
	// Two devices, each publishing every topic once.
	devs := []*device{newDevice(t, "dev-b", c.MQTTURL(0)), newDevice(t, "dev-c", c.MQTTURL(0))}
	var all []string
	start := time.Now()
	var wg sync.WaitGroup
	for k, batch := range []string{"1", "2"} {
		msgs, payloads := readings(batch, topics)
		all = append(all, payloads...)
		wg.Go(func() {
			if err := devs[k].publish(msgs); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	published := time.Since(start)
	took = eventually(t, 20*time.Second, "every reading acked", func() bool { return len(l.missing(all)) == 0 })
	t.Logf("%d readings on %d topics: published in %v, all handled %v after the last PUBACK",
		len(all), len(topics), published.Round(time.Millisecond), took.Round(time.Millisecond))

	for _, topic := range topics {
		parts := l.partition[topic]
		s, _ := filterToSubject(topic)
		if len(parts) != 1 || !parts[PartitionOf(s, 16)] {
			t.Errorf("topic %q arrived in partitions %v, want only %d", topic, parts, PartitionOf(s, 16))
		}
	}
	// Acks are not confirmed, so the lag reaches 0 shortly after.
	var st Status
	eventually(t, 10*time.Second, "status shows a owning every partition, no lag", func() bool {
		var err error
		if st, err = a.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, ps := range st.Partitions {
			if ps.Owner != "a" || ps.Pending != 0 || ps.AckPending != 0 {
				return false
			}
		}
		return len(st.Partitions) == 16 && len(st.Members) == 1
	})
}

// Every instance must agree on the partition count: a second count would
// put one topic in two partitions.
func TestPartitionCountChangeRefused(t *testing.T) {
	c := natstest.Start(t, 1)
	_, js := connect(t, c)
	ctx := context.Background()
	cfg := fleetConfig(1)
	cfg.JS = js
	cfg, _ = cfg.withDefaults()
	if _, err := ensureTopology(ctx, cfg, newNames(cfg.Prefix)); err != nil {
		t.Fatal(err)
	}
	cfg.Partitions = 8
	if _, err := ensureTopology(ctx, cfg, newNames(cfg.Prefix)); err == nil {
		t.Fatal("a different partition count was accepted on a live stream")
	}
}

var _ = errors.Is
