package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/cluster/natstest"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

// TestStoreReplica runs alertd's store over partition state on one node
// (R1: each commit is a few ms of sync, the slowest case); the subtests
// use their own partitions.
func TestStoreReplica(t *testing.T) {
	c := natstest.Start(t, 1)
	_, js := connect(t, c)
	cfg := StateConfig{Replicas: 1}
	t.Run("round trip and fence", func(t *testing.T) { testStoreRoundTripAndFence(t, js, cfg, 0) })
	t.Run("group split", func(t *testing.T) { testStoreGroupSplit(t, js, cfg, 1) })
	t.Run("unknown outcome", func(t *testing.T) { testStoreUnknownOutcome(t, js, cfg, 2) })
}

// openStore opens partition p under term and the store built from it.
func openStore(t *testing.T, js jetstream.JetStream, cfg StateConfig, p int, term uint64) (*PartitionState, *store.DB) {
	t.Helper()
	ps := openState(t, js, cfg, p, term)
	db := reopenStore(t, ps)
	return ps, db
}

func reopenStore(t *testing.T, ps *PartitionState) *store.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("p%d-term%d.db", ps.Partition(), ps.Term()))
	db, err := store.OpenReplicated(path, NewStoreReplica(ps, 0), LoadInto(ps))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var storeBuckets = [][]byte{store.BucketSeries, store.BucketRules, store.BucketOutbox, store.BucketDead, store.BucketMeta,
	store.BucketAlerts, store.BucketSilences, store.BucketGroups, store.BucketQuarantine, store.BucketLastSeen}

// dumpStore is every bucket's keys, values and sequence.
func dumpStore(t *testing.T, db *store.DB) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	err := db.View(func(tx *store.Tx) error {
		for _, name := range storeBuckets {
			b := tx.Bucket(name)
			m := map[string]string{"(sequence)": fmt.Sprint(b.Sequence())}
			if err := b.ForEach(func(k, v []byte) error { m[string(k)] = string(v); return nil }); err != nil {
				return err
			}
			out[string(name)] = m
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Real writes of alertd's packages reach the partition state, a new owner
// rebuilds the same store from it, and the old owner is fenced.
func testStoreRoundTripAndFence(t *testing.T, js jetstream.JetStream, cfg StateConfig, p int) {
	_, db1 := openStore(t, js, cfg, p, 1)
	q := outbox.New(db1)
	now := time.Now().UTC().Truncate(time.Second)
	for i := range 3 {
		e := &outbox.Entry{Rule: "hot", Series: "fleet/dev1", From: "a@example.com", To: []string{"b@example.com"},
			Subject: fmt.Sprintf("mail %d", i), MessageID: fmt.Sprintf("<%d@example.com>", i),
			Message: []byte("Subject: x\r\n\r\nbody\r\n"), Created: now, Next: now}
		if err := q.Enqueue(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Done(2); err != nil {
		t.Fatal(err)
	}
	hot := &rules.Rule{Name: "hot"}
	err := db1.Update(func(tx *store.Tx) error {
		for _, topic := range []string{"fleet/dev.1/temp", "fleet/dev 2/temp"} {
			s := &alerts.Series{Rule: hot, Topic: topic, State: alerts.Firing, Since: now, LastSeen: now, Thread: "<0@example.com>"}
			if err := alerts.Put(tx, s); err != nil {
				return err
			}
		}
		if err := tx.Bucket(store.BucketRules).Put([]byte("hot"), []byte("window")); err != nil {
			return err
		}
		if err := tx.Bucket(store.BucketSilences).SetSequence(9); err != nil {
			return err
		}
		return store.Quarantine(tx, store.BucketGroups, []byte("hot\x00\x01"), []byte("{bad"), errors.New("unreadable"), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db1.PutMeta(store.MetaSessionFilters, []byte(`["fleet/#"]`)); err != nil {
		t.Fatal(err)
	}
	want := dumpStore(t, db1)

	_, db2 := openStore(t, js, cfg, p, 2)
	if got := dumpStore(t, db2); !maps.EqualFunc(got, want, maps.Equal) {
		t.Errorf("the new owner's store differs from the old one's:\n got %q\nwant %q", got, want)
	}

	// The old owner is fenced, and its file keeps what it had.
	err = db1.Update(func(tx *store.Tx) error { return tx.Bucket(store.BucketRules).Put([]byte("hot"), []byte("stale")) })
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("the old owner's Update: %v, want ErrFenced", err)
	}
	if err := q.Done(1); !errors.Is(err, ErrFenced) {
		t.Fatalf("the old owner's Batch: %v, want ErrFenced", err)
	}
	if got := dumpStore(t, db1); !maps.EqualFunc(got, want, maps.Equal) {
		t.Errorf("a fenced transaction changed the old owner's file:\n got %q\nwant %q", got, want)
	}
	if err := outbox.New(db2).Done(1); err != nil {
		t.Fatalf("the new owner's Batch: %v", err)
	}
}

// countingReplica records the size of every commit; the first one waits
// until release is closed.
type countingReplica struct {
	store.Replica
	release chan struct{}
	first   sync.Once
	mu      sync.Mutex
	sizes   []int
}

func (c *countingReplica) Commit(ws []store.Write) error {
	c.first.Do(func() { <-c.release })
	c.mu.Lock()
	c.sizes = append(c.sizes, len(ws))
	c.mu.Unlock()
	return c.Replica.Commit(ws)
}

// 1500 concurrent writers, more than one replica commit holds: the group
// is committed in parts, and every write is in the state.
func testStoreGroupSplit(t *testing.T, js jetstream.JetStream, cfg StateConfig, p int) {
	const n = 1500
	ps := openState(t, js, cfg, p, 1)
	r := &countingReplica{Replica: NewStoreReplica(ps, 0), release: make(chan struct{})}
	db, err := store.OpenReplicated(filepath.Join(t.TempDir(), "p.db"), r, LoadInto(ps))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var started atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			started.Add(1)
			if err := db.Batch(func(tx *store.Tx) error {
				return tx.Bucket(store.BucketSeries).Put(fmt.Appendf(nil, "hot\x00fleet/dev%04d", i), []byte("t"))
			}); err != nil {
				t.Error(err)
			}
		})
	}
	eventually(t, 10*time.Second, "every writer started", func() bool { return started.Load() == n })
	time.Sleep(50 * time.Millisecond) // and queued behind the first commit
	close(r.release)
	wg.Wait()
	r.mu.Lock()
	sizes := slices.Clone(r.sizes)
	r.mu.Unlock()
	total := 0
	for _, s := range sizes {
		total += s
	}
	t.Logf("commits of %v writes", sizes)
	if total != n || slices.Max(sizes) > store.MaxReplicaWrites || len(sizes) < 3 {
		t.Errorf("commits of %v writes: want %d in all, in parts of at most %d", sizes, n, store.MaxReplicaWrites)
	}
	_, db2 := openStore(t, js, cfg, p, 2)
	if got := dumpStore(t, db2)[string(store.BucketSeries)]; len(got) != n+1 {
		t.Errorf("the new owner has %d series keys, want %d", len(got)-1, n)
	}
}

// lostReply is a commit whose reply is lost: its batch stored or not, the
// state then refuses commits until Resync, as after a timeout.
func lostReply(ps *PartitionState, stored bool) func(ctx context.Context, ws []Write) error {
	return func(ctx context.Context, ws []Write) error {
		if stored {
			msgs, err := ps.batchMessages(ws)
			if err != nil {
				return err
			}
			if _, _, err := ps.publishBatch(ctx, msgs); err != nil {
				return err
			}
		}
		ps.commitMu.Lock()
		ps.broken = fmt.Errorf("%w (the reply was lost)", ErrUnknownOutcome)
		ps.commitMu.Unlock()
		return ps.broken
	}
}

// A commit whose reply is lost: the store commits it if it landed, rolls
// it back if it did not, and asks to be reopened if nobody can tell.
func testStoreUnknownOutcome(t *testing.T, js jetstream.JetStream, cfg StateConfig, p int) {
	ps := openState(t, js, cfg, p, 1)
	r := NewStoreReplica(ps, 0).(*storeReplica)
	db, err := store.OpenReplicated(filepath.Join(t.TempDir(), "p.db"), r, LoadInto(ps))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	put := func(k, v string) error {
		return db.Update(func(tx *store.Tx) error { return tx.Bucket(store.BucketSeries).Put([]byte(k), []byte(v)) })
	}

	r.commit = lostReply(ps, true)
	if err := put("landed", "1"); err != nil {
		t.Fatalf("a commit that landed without a reply: %v, want nil", err)
	}
	r.commit = lostReply(ps, false)
	if err := put("lost", "1"); !errors.Is(err, ErrUnknownOutcome) || errors.Is(err, store.ErrReopen) {
		t.Fatalf("a commit that did not land: %v, want ErrUnknownOutcome", err)
	}
	r.commit = nil
	if err := put("after", "1"); err != nil {
		t.Fatalf("a commit after a settled outcome: %v", err)
	}

	// A resync that fails too: nobody knows, so the store must be reopened.
	ps.cfg.Timeout = time.Microsecond
	if err := put("unknown", "1"); !errors.Is(err, store.ErrReopen) || !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("a commit whose resync failed: %v, want ErrReopen and ErrUnknownOutcome", err)
	}
	ps.cfg.Timeout = DefaultStateTimeout
	if err := put("refused", "1"); !errors.Is(err, store.ErrReopen) {
		t.Fatalf("a commit after ErrReopen: %v, want ErrReopen", err)
	}
	db.Close()
	if err := ps.Resync(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	db = reopenStore(t, ps)
	got := dumpStore(t, db)[string(store.BucketSeries)]
	if got["landed"] != "1" || got["after"] != "1" || got["lost"] != "" || got["refused"] != "" {
		t.Errorf("after the reopen the series bucket holds %q", got)
	}
	t.Logf("the commit whose resync failed landed: %v", got["unknown"] == "1")
	_, db2 := openStore(t, js, cfg, p, 2)
	if want := dumpStore(t, db2); !maps.EqualFunc(dumpStore(t, db), want, maps.Equal) {
		t.Errorf("the reopened store differs from the state")
	}
}
