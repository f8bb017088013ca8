package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/cluster/natstest"
)

// (c) An owner paused past its lease (a long GC pause, SIGSTOP, a VM
// migration) is taken over; when it resumes it cannot act as the owner:
// its ack is refused, its next lease renewal (a compare-and-set on the
// revision) fails, and it steps back, saying so in its log. The reading it
// was holding went to the new owner, whose term is larger.
func TestStaleOwnerStepsBack(t *testing.T) {
	c := natstest.Start(t, 1)
	cfg := fleetConfig(1)
	cfg.Partitions, cfg.LeaseTTL = 4, 2*time.Second

	l := newLedger()
	logA, recA := testLogger(t)
	var paused atomic.Bool
	resume := make(chan struct{})
	got := make(chan Reading, 1)
	gate := make(chan struct{})
	ackErr := make(chan error, 1)
	cfgA := cfg
	cfgA.Logger = logA
	a := startInstance(t, c, cfgA, "a", func(ctx context.Context, r Reading) error {
		if !paused.Load() {
			return r.Ack()
		}
		got <- r
		<-gate // the process is stopped in the middle of handling
		ackErr <- r.Ack()
		return nil
	}, func(in *Ingest) {
		in.pause = func() {
			if paused.Load() {
				<-resume
			}
		}
	})
	b := startInstance(t, c, cfg, "b", l.handler("b", nil))
	eventually(t, 20*time.Second, "a and b balanced: "+owned(a, b), func() bool { return balanced(4, a, b) })

	// A topic in one of a's partitions.
	var topic string
	var part int
	for _, tp := range fleetTopics(100) {
		s, _ := filterToSubject(tp)
		if part = PartitionOf(s, 4); slices.Contains(a.Owned(), part) {
			topic = tp
			break
		}
	}
	paused.Store(true)
	msgs, payload := readings("stale", []string{topic})
	newDevice(t, "dev", c.MQTTURL(0)).mustPublish(t, msgs)
	r := <-got
	start := time.Now()

	eventually(t, 10*time.Second, "b takes a's partitions over: "+owned(b), func() bool { return balanced(4, b) })
	eventually(t, 10*time.Second, "b handles the reading a holds", func() bool { return l.ackedBy(payload[0]) == "b" })
	t.Logf("b took over and handled the reading %v after a paused", time.Since(start).Round(time.Millisecond))

	st, err := b.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ps := st.Partitions[part]; ps.Owner != "b" || ps.Term <= r.Term {
		t.Errorf("partition %d: owner %s term %d; want b with a term above the stale one, %d", part, ps.Owner, ps.Term, r.Term)
	}

	close(gate) // a resumes in its handler and acks
	if err := <-ackErr; !errors.Is(err, ErrNotOwner) {
		t.Fatalf("the stale owner's ack: %v, want ErrNotOwner", err)
	}
	paused.Store(false)
	close(resume) // and its coordinator renews
	eventually(t, 10*time.Second, "a logs that it stepped back from partition "+fmt.Sprint(part), func() bool {
		return recA.has("partition lost; stepping back", fmt.Sprintf("partition=%d ", part))
	})

	// a rejoins as an ordinary member and gets its share back.
	eventually(t, 20*time.Second, "a and b balanced again: "+owned(a, b), func() bool { return balanced(4, a, b) })
}
