package cluster

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/cluster/natstest"
)

// (b) Three instances share the 16 partitions within ±1. One of them dies
// holding readings it handled but never acknowledged (its commit did not
// happen): the survivors take its partitions over, those readings are
// redelivered to them, and no reading is lost. The time from the death to
// the last redelivered reading handled is the takeover time; issue 15 asks
// for at most 10 s with the default settings.
func TestTakeoverAfterCrash(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ttl        time.Duration // 0: the default, 5s
		partitions int
		kill       func(*instance)
	}{
		// The process stops without handing back or releasing anything;
		// the defaults, as issue 15's 10 s is stated for them.
		{"crash", 0, 16, func(x *instance) { x.crash.Store(true); x.cancel() }},
		// Its NATS connection goes away under it (a network cut, kill -9
		// seen from the server), on a shorter TTL and fewer partitions to
		// keep CI quick.
		{"connection closed", 2 * time.Second, 8, func(x *instance) { x.nc.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testTakeover(t, tc.ttl, tc.partitions, tc.kill)
		})
	}
}

func testTakeover(t *testing.T, ttl time.Duration, n int, kill func(*instance)) {
	c := natstest.Start(t, 3)
	cfg := fleetConfig(3)
	cfg.LeaseTTL, cfg.Partitions = ttl, n
	l := newLedger()
	var victimHolds atomic.Bool // the victim handles but never acks
	hold := func(Reading) bool { return victimHolds.Load() }
	// A rolling start: the first creates the stream and consumers, the
	// others join and take their shares from it.
	a := startInstance(t, c, cfg, "a", l.handler("a", nil))
	eventually(t, 20*time.Second, "a owns every partition", func() bool { return balanced(n, a) })
	b := startInstance(t, c, cfg, "b", l.handler("b", nil))
	v := startInstance(t, c, cfg, "v", l.handler("v", hold))
	took := eventually(t, 20*time.Second, "three instances balanced: "+owned(a, b, v), func() bool { return balanced(n, a, b, v) })
	t.Logf("balanced in %v: %s", took.Round(time.Millisecond), owned(a, b, v))

	topics := fleetTopics(200)
	dev := newDevice(t, "dev", c.MQTTURL(0))
	msgs, first := readings("1", topics)
	dev.mustPublish(t, msgs)
	eventually(t, 20*time.Second, "batch 1 acked", func() bool { return len(l.missing(first)) == 0 })

	victimHolds.Store(true)
	msgs, second := readings("2", topics)
	dev.mustPublish(t, msgs)
	eventually(t, 20*time.Second, "batch 2 handled (the victim's share unacked)", func() bool {
		for _, p := range second {
			if l.ackedBy(p) == "" && l.seenCount(p) == 0 {
				return false
			}
		}
		return true
	})
	held := len(l.missing(second))
	victims := v.Owned()
	if held == 0 {
		t.Fatal("the victim holds no unacked reading; the test proves nothing")
	}

	start := time.Now()
	kill(v)
	owns := eventually(t, 20*time.Second, "survivors own every partition: "+owned(a, b), func() bool { return balanced(n, a, b) })
	done := eventually(t, 20*time.Second, "the victim's unacked readings redelivered and acked", func() bool {
		return len(l.missing(second)) == 0
	})
	total := owns + done
	t.Logf("victim held partitions %v with %d unacked readings; survivors owned them after %v, all handled after %v",
		victims, held, owns.Round(time.Millisecond), total.Round(time.Millisecond))
	if total > 10*time.Second {
		t.Errorf("takeover took %v; issue 15 asks for at most 10 s", total)
	}
	if time.Since(start) < total {
		t.Fatal("clock went backwards")
	}

	msgs, third := readings("3", topics)
	dev.mustPublish(t, msgs)
	eventually(t, 20*time.Second, "batch 3 acked by the survivors", func() bool { return len(l.missing(third)) == 0 })
	for _, p := range append(second, third...) {
		if by := l.ackedBy(p); by == "v" {
			t.Errorf("reading %s acked by the dead instance", p)
		}
	}
	for _, topic := range topics {
		if n := len(l.partition[topic]); n != 1 {
			t.Errorf("topic %s arrived in %d partitions", topic, n)
		}
	}
}

// A graceful stop releases the leases: the peer takes over at once rather
// than after LeaseTTL, and readings published meanwhile all arrive.
func TestGracefulStopHandsOver(t *testing.T) {
	c := natstest.Start(t, 1)
	cfg := fleetConfig(1)
	cfg.Partitions = 4 // the default LeaseTTL, 5s, is what is beaten
	l := newLedger()
	a := startInstance(t, c, cfg, "a", l.handler("a", nil))
	b := startInstance(t, c, cfg, "b", l.handler("b", nil))
	eventually(t, 20*time.Second, "a and b balanced: "+owned(a, b), func() bool { return balanced(4, a, b) })

	start := time.Now()
	a.stop(t)
	eventually(t, 10*time.Second, "b owns every partition: "+owned(b), func() bool { return balanced(4, b) })
	took := time.Since(start)
	t.Logf("b owned a's partitions %v after a was told to stop", took.Round(time.Millisecond))
	if took >= cfg.withDefaultsT(t).LeaseTTL {
		t.Errorf("takeover after a graceful stop took %v, as long as an expiry", took)
	}
	msgs, payloads := readings("after", fleetTopics(50))
	newDevice(t, "dev", c.MQTTURL(0)).mustPublish(t, msgs)
	eventually(t, 10*time.Second, "readings after the handover acked by b", func() bool { return len(l.missing(payloads)) == 0 })
}
