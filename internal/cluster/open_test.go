package cluster

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/cluster/natstest"
)

// A pipeline per partition: RunPartitions opens each partition it takes,
// with the lease's term, before any of its readings (a failed open is
// retried, its readings waiting), hands the partition's readings only to
// the handler that open returned, and closes each partition once, after
// its last reading, when it gives the partition up.
func TestRunPartitionsOpensAndClosesEachPartition(t *testing.T) {
	c := natstest.Start(t, 1)
	nc, js := connect(t, c)
	defer nc.Close()
	cfg := fleetConfig(1)
	cfg.Partitions, cfg.JS, cfg.Instance = 4, js, "a"
	cfg.Logger, _ = testLogger(t)
	in, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	opens, closes := map[int]int{}, map[int]int{}
	terms := map[int]uint64{}
	handled := map[int]int{}
	closedBeforeRead := false
	failOnce := map[int]bool{}
	open := func(_ context.Context, p int, term uint64) (Handler, func(), error) {
		mu.Lock()
		defer mu.Unlock()
		if !failOnce[p] {
			failOnce[p] = true
			return nil, nil, errors.New("state not reachable yet")
		}
		opens[p]++
		terms[p] = term
		return func(_ context.Context, r Reading) error {
				mu.Lock()
				defer mu.Unlock()
				if r.Partition != p || r.Term != term {
					t.Errorf("partition %d (term %d) handler got a reading of %d (term %d)", p, term, r.Partition, r.Term)
				}
				if closes[p] > 0 {
					closedBeforeRead = true
				}
				handled[p]++
				return r.Ack()
			}, func() {
				mu.Lock()
				closes[p]++
				mu.Unlock()
			}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.RunPartitions(ctx, open) }()
	eventually(t, 20*time.Second, "four partitions opened", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(opens) == 4
	})
	dev := newDevice(t, "dev", c.MQTTURL(0))
	msgs, _ := readings("1", fleetTopics(100))
	dev.mustPublish(t, msgs)
	eventually(t, 20*time.Second, "100 readings handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, k := range handled {
			n += k
		}
		return n == 100
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for p := range 4 {
		if opens[p] != 1 || closes[p] != 1 || terms[p] == 0 {
			t.Errorf("partition %d: opened %d, closed %d times, term %d; want once each with a term", p, opens[p], closes[p], terms[p])
		}
	}
	if closedBeforeRead {
		t.Error("a partition's handler was called after it was closed")
	}
}

// A pipeline that can no longer work on its partition (its state fenced,
// its copy behind) gives it up: the lease is released and the partition
// is taken anew, here by the same instance, under a later term; a GiveUp
// naming an old term does nothing.
func TestGiveUpTakesThePartitionAnewUnderALaterTerm(t *testing.T) {
	c := natstest.Start(t, 1)
	nc, js := connect(t, c)
	defer nc.Close()
	cfg := fleetConfig(1)
	cfg.Partitions, cfg.JS, cfg.Instance = 2, js, "a"
	cfg.Logger, _ = testLogger(t)
	in, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	terms := map[int][]uint64{}
	open := func(_ context.Context, p int, term uint64) (Handler, func(), error) {
		mu.Lock()
		terms[p] = append(terms[p], term)
		first := len(terms[p]) == 1
		mu.Unlock()
		if p == 0 && first {
			in.GiveUp(p, term+1000) // not the lease it holds: ignored
			in.GiveUp(p, term)
		}
		return func(_ context.Context, r Reading) error { return r.Ack() }, func() {}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.RunPartitions(ctx, open) }()
	eventually(t, 20*time.Second, "partition 0 opened again under a later term", func() bool {
		mu.Lock()
		defer mu.Unlock()
		ts := terms[0]
		return len(ts) >= 2 && ts[1] > ts[0]
	})
	time.Sleep(500 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(terms[0]) != 2 {
		t.Errorf("partition 0 opened under terms %v, want two", terms[0])
	}
	if len(terms[1]) != 1 {
		t.Errorf("partition 1 opened under terms %v, want one (nobody gave it up)", terms[1])
	}
}
