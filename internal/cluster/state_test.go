package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alertd/alertd/internal/cluster/natstest"
)

// Keys an MQTT topic or a rule can produce that a subject cannot carry as
// they are: separators, wildcards, whitespace, NUL, invalid UTF-8, nothing.
var hostileKeys = [][]byte{
	[]byte("fleet/dev.1/telemetry"),
	[]byte("*"), []byte(">"), []byte("a.*.>"),
	[]byte("a b\tc\r\n"),
	{0}, {0xff, 0xfe, 0x00, 0x80},
	[]byte("ünï©ødé ☃"),
	{},
	[]byte("fence"), []byte("_"), []byte("_fence"),
}

func TestStateKeyRoundTrip(t *testing.T) {
	n := newNames("alertd")
	buckets := [][]byte{[]byte("series"), {}, []byte("a.b"), []byte("*>")}
	for _, b := range buckets {
		for _, k := range hostileKeys {
			subj := n.stateKey(7, b, k)
			if subj == n.stateFence(7) {
				t.Fatalf("%q/%q encodes to the fence subject", b, k)
			}
			gb, gk, fence, err := n.parseStateKey(7, subj)
			if err != nil || fence || !bytes.Equal(gb, b) || !bytes.Equal(gk, k) {
				t.Errorf("%q/%q → %q → %q/%q fence=%v err=%v", b, k, subj, gb, gk, fence, err)
			}
		}
	}
	if _, _, fence, err := n.parseStateKey(7, n.stateFence(7)); !fence || err != nil {
		t.Errorf("fence subject: fence=%v err=%v", fence, err)
	}
	for _, bad := range []string{"alertd.state.7.x.y", "alertd.state.7._QQ", "alertd.state.8._QQ._QQ", "alertd.state.7._QQ._QQ._QQ"} {
		if _, _, _, err := n.parseStateKey(7, bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestStateR3 runs the state store against one 3-node cluster with R3;
// the subtests use their own partitions, and the one that kills a node
// runs last.
func TestStateR3(t *testing.T) {
	c := natstest.Start(t, 3)
	_, js := connect(t, c)
	cfg := StateConfig{Replicas: 3}
	t.Run("round trip", func(t *testing.T) { testStateRoundTrip(t, js, cfg, 0) })
	t.Run("stale owner", func(t *testing.T) { testStateStaleOwner(t, js, cfg, 1) })
	t.Run("all or nothing", func(t *testing.T) { testStateAllOrNothing(t, js, cfg, 2) })
	t.Run("limits", func(t *testing.T) { testStateLimits(t, js, cfg, 3) })
	t.Run("unknown outcome", func(t *testing.T) { testStateUnknownOutcome(t, js, cfg, 5) })
	t.Run("leader loss", func(t *testing.T) { testStateLeaderLoss(t, c, js, cfg, 4) })
}

// TestStateR1 runs the same on one node: nats-server commits an R1 batch
// by another path (staged in a file store of its own, no Raft).
func TestStateR1(t *testing.T) {
	c := natstest.Start(t, 1)
	_, js := connect(t, c)
	cfg := StateConfig{Replicas: 1}
	t.Run("round trip", func(t *testing.T) { testStateRoundTrip(t, js, cfg, 0) })
	t.Run("stale owner", func(t *testing.T) { testStateStaleOwner(t, js, cfg, 1) })
	t.Run("all or nothing", func(t *testing.T) { testStateAllOrNothing(t, js, cfg, 2) })
}

// Write, delete, reopen under a higher term: the new owner reads exactly
// what the old one committed, hostile keys included.
func testStateRoundTrip(t *testing.T, js jetstream.JetStream, cfg StateConfig, p int) {
	a := openState(t, js, cfg, p, 3)
	want := map[string]map[string]string{}
	var writes []Write
	for _, b := range []string{"series", "dedupe.windows", "", "*>"} {
		for i, k := range hostileKeys {
			v := fmt.Sprintf("%s/%d\x00\xff", b, i)
			writes = append(writes, Write{Bucket: []byte(b), Key: k, Value: []byte(v)})
			setWant(want, b, string(k), v)
		}
	}
	writes = append(writes, Write{Bucket: []byte("series"), Key: []byte("empty"), Value: []byte{}})
	setWant(want, "series", "empty", "")
	long := bytes.Repeat([]byte{'.'}, maxStateKey-len("series"))
	writes = append(writes, Write{Bucket: []byte("series"), Key: long, Value: []byte("long")})
	setWant(want, "series", string(long), "long")
	mustCommit(t, a, writes)

	// Deletes, an overwrite, and a key written then deleted in one commit.
	mustCommit(t, a, []Write{
		{Bucket: []byte("series"), Key: []byte("*"), Delete: true},
		{Bucket: []byte(""), Key: []byte{}, Delete: true},
		{Bucket: []byte("series"), Key: []byte(">"), Value: []byte("again")},
		{Bucket: []byte("series"), Key: []byte("brief"), Value: []byte("x")},
		{Bucket: []byte("series"), Key: []byte("brief"), Delete: true},
		{Bucket: []byte("series"), Key: []byte("never"), Delete: true},
	})
	delete(want["series"], "*")
	delete(want[""], "")
	want["series"][">"] = "again"
	if got := dumpState(a); !maps.EqualFunc(got, want, maps.Equal) {
		t.Fatalf("owner's memory:\n got %q\nwant %q", got, want)
	}

	b := openState(t, js, cfg, p, 4)
	if got := dumpState(b); !maps.EqualFunc(got, want, maps.Equal) {
		t.Fatalf("after reopen:\n got %q\nwant %q", got, want)
	}
	if v, ok := b.Get([]byte("series"), []byte("empty")); !ok || len(v) != 0 {
		t.Errorf("empty value: %q, %v; want present and empty", v, ok)
	}
	if _, ok := b.Get([]byte("series"), []byte("*")); ok {
		t.Error("deleted key readable after reopen")
	}
	var order [][]byte
	_ = b.ForEach([]byte("series"), func(k, _ []byte) error { order = append(order, k); return nil })
	if !slices.IsSortedFunc(order, bytes.Compare) || len(order) != len(want["series"]) {
		t.Errorf("ForEach: %d keys, sorted %v; want %d sorted", len(order), slices.IsSortedFunc(order, bytes.Compare), len(want["series"]))
	}
}

// A paused owner (term 5) that missed a takeover (term 9) cannot write:
// its commit is refused whole, and stays refused.
func testStateStaleOwner(t *testing.T, js jetstream.JetStream, cfg StateConfig, p int) {
	ctx := testCtx(t)
	a := openState(t, js, cfg, p, 5)
	mustCommit(t, a, []Write{kv("series", "k1", "a1")})
	b := openState(t, js, cfg, p, 9)

	err := a.Commit(ctx, []Write{kv("series", "k1", "stale"), kv("series", "k2", "stale")})
	var fe *FencedError
	if !errors.Is(err, ErrFenced) || !errors.As(err, &fe) || fe.Term != 5 || fe.Holder != 9 && fe.Holder != 0 {
		t.Fatalf("stale owner's commit: %v; want a *FencedError for term 5 naming term 9 (or none)", err)
	}
	t.Logf("stale owner refused: %v", err)
	if v, _ := a.Get([]byte("series"), []byte("k1")); string(v) != "a1" {
		t.Errorf("stale owner's memory changed by a refused commit: k1=%q", v)
	}
	mustCommit(t, b, []Write{kv("series", "k3", "b3")})
	if err := a.Commit(ctx, []Write{kv("series", "k4", "stale")}); !errors.Is(err, ErrFenced) {
		t.Errorf("second stale commit: %v; want ErrFenced", err)
	}
	if err := a.Resync(ctx); !errors.Is(err, ErrFenced) {
		t.Errorf("stale owner's resync: %v; want ErrFenced", err)
	}
	want := map[string]map[string]string{"series": {"k1": "a1", "k3": "b3"}}
	if got := dumpState(b); !maps.EqualFunc(got, want, maps.Equal) {
		t.Errorf("new owner sees %q; want %q", got, want)
	}
	r := openState(t, js, cfg, p, 10)
	if got := dumpState(r); !maps.EqualFunc(got, want, maps.Equal) {
		t.Errorf("after reopen: %q; want %q", got, want)
	}

	// Opening under an older or equal term than the fence's is refused.
	for _, term := range []uint64{7, 10} {
		_, err := OpenState(ctx, js, cfg, p, term)
		if !errors.As(err, &fe) || fe.Holder != 10 {
			t.Errorf("open with term %d under fence 10: %v; want a *FencedError naming term 10", term, err)
		}
	}
	mustCommit(t, r, []Write{kv("series", "k1", "r1")})
}

// A batch whose fence is refused stores none of its writes: checked on
// every subject in the stream itself, not only through the loader.
func testStateAllOrNothing(t *testing.T, js jetstream.JetStream, cfg StateConfig, p int) {
	ctx := testCtx(t)
	a := openState(t, js, cfg, p, 5)
	var initial, batch []Write
	for i := range 10 {
		initial = append(initial, kv("series", fmt.Sprintf("k%d", i), "v1"))
		batch = append(batch, kv("series", fmt.Sprintf("k%d", i), "v2"), kv("groups", fmt.Sprintf("n%d", i), "new"))
	}
	batch = append(batch, Write{Bucket: []byte("series"), Key: []byte("k5"), Delete: true})
	mustCommit(t, a, initial)
	want := dumpState(a)
	b := openState(t, js, cfg, p, 6)

	if err := a.Commit(ctx, batch); !errors.Is(err, ErrFenced) {
		t.Fatalf("commit past the fence: %v; want ErrFenced", err)
	}
	for name, s := range map[string]*PartitionState{"stale owner": a, "new owner": b, "reopened": openState(t, js, cfg, p, 7)} {
		if got := dumpState(s); !maps.EqualFunc(got, want, maps.Equal) {
			t.Errorf("%s sees %q; want %q", name, got, want)
		}
	}
	st, err := js.Stream(ctx, newNames(DefaultPrefix).stateStream())
	if err != nil {
		t.Fatal(err)
	}
	n := newNames(DefaultPrefix)
	for _, w := range batch {
		m, err := st.GetLastMsgForSubject(ctx, n.stateKey(p, w.Bucket, w.Key))
		switch {
		case string(w.Bucket) == "groups":
			if !errors.Is(err, jetstream.ErrMsgNotFound) {
				t.Errorf("%s/%s of the refused batch is in the stream: %v", w.Bucket, w.Key, err)
			}
		case err != nil:
			t.Errorf("%s/%s: %v", w.Bucket, w.Key, err)
		case string(m.Data) != "v1" || m.Header.Get(hdrStateOp) != "":
			t.Errorf("%s/%s in the stream: %q %v; want v1 from before the refused batch", w.Bucket, w.Key, m.Data, m.Header)
		}
	}
}

// The batch limit is the server's: 999 writes and the fence commit, one
// more is refused before anything is sent, and a limit set above the
// server's is refused by the server, whole.
func testStateLimits(t *testing.T, js jetstream.JetStream, cfg StateConfig, p int) {
	ctx := testCtx(t)
	s := openState(t, js, cfg, p, 1)
	many := func(n int, v string) []Write {
		w := make([]Write, n)
		for i := range w {
			w[i] = kv("series", fmt.Sprintf("k%04d", i), v)
		}
		return w
	}
	start := time.Now()
	mustCommit(t, s, many(DefaultStateMaxBatch-1, "full"))
	t.Logf("commit of %d writes: %v", DefaultStateMaxBatch-1, time.Since(start).Round(time.Millisecond))
	if err := s.Commit(ctx, many(DefaultStateMaxBatch, "over")); !errors.Is(err, ErrBatchTooLarge) {
		t.Errorf("commit of %d writes: %v; want ErrBatchTooLarge", DefaultStateMaxBatch, err)
	}

	cfg.MaxBatch = DefaultStateMaxBatch + 10
	s2 := openState(t, js, cfg, p, 2)
	err := s2.Commit(ctx, many(DefaultStateMaxBatch, "over"))
	if !errors.Is(err, ErrBatchTooLarge) {
		t.Errorf("batch over the server's limit: %v; want ErrBatchTooLarge", err)
	}
	t.Logf("server's refusal: %v", err)
	r := openState(t, js, cfg, p, 3)
	if v, _ := r.Get([]byte("series"), []byte("k0000")); string(v) != "full" {
		t.Errorf("after refused batches k0000=%q; want full", v)
	}
	mustCommit(t, r, many(3, "after"))

	tooLong := Write{Bucket: []byte("b"), Key: bytes.Repeat([]byte("k"), maxStateKey)}
	if err := r.Commit(ctx, []Write{tooLong}); !errors.Is(err, ErrKeyTooLong) {
		t.Errorf("key of %d bytes: %v; want ErrKeyTooLong", maxStateKey, err)
	}
}

// A commit whose reply does not come in time may or may not have been
// applied: the state refuses commits until Resync has made memory and
// stream agree again.
func testStateUnknownOutcome(t *testing.T, js jetstream.JetStream, cfg StateConfig, p int) {
	ctx := testCtx(t)
	s := openState(t, js, cfg, p, 1)
	mustCommit(t, s, []Write{kv("series", "a", "1")})
	s.cfg.Timeout = time.Microsecond // the reply cannot come in time
	err := s.Commit(ctx, []Write{kv("series", "b", "2")})
	s.cfg.Timeout = DefaultStateTimeout
	if !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("commit without a reply: %v; want ErrUnknownOutcome", err)
	}
	if err := s.Commit(ctx, []Write{kv("series", "c", "3")}); !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("commit before Resync: %v; want ErrUnknownOutcome", err)
	}
	if err := s.Resync(ctx); err != nil {
		t.Fatalf("resync: %v", err)
	}
	_, applied := s.Get([]byte("series"), []byte("b"))
	t.Logf("the unanswered commit was applied: %v", applied)
	mustCommit(t, s, []Write{kv("series", "c", "3")})

	// The other case: the batch was stored but its reply was lost.
	msgs, err := s.batchMessages([]Write{kv("series", "d", "4")})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.publishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	s.broken = ErrUnknownOutcome
	if err := s.Resync(ctx); err != nil {
		t.Fatalf("resync: %v", err)
	}
	if v, _ := s.Get([]byte("series"), []byte("d")); string(v) != "4" {
		t.Errorf("after resync, the stored batch whose reply was lost reads d=%q; want 4", v)
	}
	mustCommit(t, s, []Write{kv("series", "e", "5")})
	if got, want := dumpState(openState(t, js, cfg, p, 2)), dumpState(s); !maps.EqualFunc(got, want, maps.Equal) {
		t.Errorf("after resync the stream has %q, the owner %q", got, want)
	}
}

// Losing the stream leader's node loses no committed write, and commits
// resume once a new leader is elected.
func testStateLeaderLoss(t *testing.T, c *natstest.Cluster, js jetstream.JetStream, cfg StateConfig, p int) {
	ctx := testCtx(t)
	s := openState(t, js, cfg, p, 1)
	mustCommit(t, s, []Write{kv("series", "before", "1")})
	name := newNames(DefaultPrefix).stateStream()
	old := streamLeader(t, js, name)
	victim := c.Index(old)
	if victim < 0 {
		t.Fatalf("stream leader %q is not a node", old)
	}
	c.Kill(victim)
	killed := time.Now()
	eventually(t, 30*time.Second, "a new state stream leader", func() bool {
		l := streamLeaderNow(js, name)
		return l != "" && l != old
	})
	t.Logf("killed %s (leader of %s); new leader after %v", old, name, time.Since(killed).Round(time.Millisecond))
	eventually(t, 30*time.Second, "a commit after the leader's loss", func() bool {
		err := s.Commit(ctx, []Write{kv("series", "after", "2")})
		if errors.Is(err, ErrUnknownOutcome) {
			t.Logf("commit: %v; resync", err)
			err = s.Resync(ctx)
		}
		if err != nil {
			t.Logf("commit: %v", err)
			time.Sleep(100 * time.Millisecond)
		}
		return err == nil
	})
	t.Logf("committed %v after the kill", time.Since(killed).Round(time.Millisecond))
	want := map[string]map[string]string{"series": {"before": "1", "after": "2"}}
	if got := dumpState(openState(t, js, cfg, p, 2)); !maps.EqualFunc(got, want, maps.Equal) {
		t.Errorf("after the leader's loss: %q; want %q", got, want)
	}
}

func streamLeader(t *testing.T, js jetstream.JetStream, name string) string {
	t.Helper()
	var l string
	eventually(t, 10*time.Second, "a leader of "+name, func() bool { l = streamLeaderNow(js, name); return l != "" })
	return l
}

func streamLeaderNow(js jetstream.JetStream, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil || s.CachedInfo().Cluster == nil {
		return ""
	}
	return s.CachedInfo().Cluster.Leader
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openState(t testing.TB, js jetstream.JetStream, cfg StateConfig, p int, term uint64) *PartitionState {
	t.Helper()
	s, err := OpenState(testCtx(t), js, cfg, p, term)
	if err != nil {
		t.Fatalf("open partition %d with term %d: %v", p, term, err)
	}
	return s
}

func mustCommit(t testing.TB, s *PartitionState, writes []Write) {
	t.Helper()
	if err := s.Commit(testCtx(t), writes); err != nil {
		t.Fatalf("commit %d writes to partition %d: %v", len(writes), s.p, err)
	}
}

func kv(bucket, key, value string) Write {
	return Write{Bucket: []byte(bucket), Key: []byte(key), Value: []byte(value)}
}

func setWant(want map[string]map[string]string, b, k, v string) {
	if want[b] == nil {
		want[b] = map[string]string{}
	}
	want[b][k] = v
}

// dumpState is the state's memory as strings, for comparisons.
func dumpState(s *PartitionState) map[string]map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]map[string]string{}
	for b, keys := range s.data {
		for k, v := range keys {
			setWant(out, b, k, string(v))
		}
	}
	return out
}

// BenchmarkStateCommit measures one Commit (the writes and the fence in one
// atomic batch, 200-byte values) on one node with R1 and three with R3.
func BenchmarkStateCommit(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("R%d", nodes), func(b *testing.B) {
			c := natstest.Start(b, nodes)
			_, js := connect(b, c)
			cfg := StateConfig{Replicas: nodes}
			term := uint64(0)
			for _, size := range []int{1, 10, 100} {
				b.Run(fmt.Sprintf("writes=%d", size), func(b *testing.B) {
					term++ // the sub-benchmark runs again for each b.N
					s := openState(b, js, cfg, size, term)
					value := bytes.Repeat([]byte("v"), 200)
					writes := make([]Write, size)
					for i := range writes {
						writes[i] = Write{Bucket: []byte("series"), Key: fmt.Appendf(nil, "fleet/dev%d/telemetry", i), Value: value}
					}
					ctx := testCtx(b)
					b.ResetTimer()
					for range b.N {
						if err := s.Commit(ctx, writes); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
				})
			}
		})
	}
}
