package cluster

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alertd/alertd/internal/cluster/natstest"
	"github.com/alertd/alertd/internal/silence"
)

// A silence added through one instance holds back the mails of every
// instance: each watches the bucket. Removed through another, the first
// hears of it (to retry what it held back). IDs added at once by several
// instances are distinct, and an instance opened later loads what the
// bucket holds.
func TestSilencesAreSharedByTheInstances(t *testing.T) {
	c := natstest.Start(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var mu sync.Mutex
	var removed []silence.Silence
	open := func(onRemoved func(silence.Silence)) *Silences {
		_, js := connect(t, c)
		s, err := OpenSilences(ctx, js, SilencesConfig{Prefix: "t", Replicas: 1, OnRemoved: onRemoved})
		if err != nil {
			t.Fatal(err)
		}
		go s.Run(ctx)
		return s
	}
	a := open(func(si silence.Silence) { mu.Lock(); removed = append(removed, si); mu.Unlock() })
	b := open(nil)
	now := time.Now()
	si, err := b.Add(silence.Silence{Rule: "hot", Series: "greenhouse/+/temp", Created: now, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a holds the silence b added", func() bool {
		return a.Silenced("hot", "greenhouse/east/temp", time.Now()).Equal(si.Expires)
	})
	if !a.Silenced("hot", "cellar/temp", time.Now()).IsZero() || !a.Silenced("cold", "greenhouse/east/temp", time.Now()).IsZero() {
		t.Fatal("the silence covers what it does not name")
	}

	// Eight adds at once, four through each instance: eight IDs.
	var wg sync.WaitGroup
	ids := make([]uint64, 8)
	for k := range ids {
		wg.Go(func() {
			s := a
			if k%2 == 1 {
				s = b
			}
			got, err := s.Add(silence.Silence{Rule: "hot", Created: now, Expires: now.Add(time.Minute)})
			if err != nil {
				t.Error(err)
			}
			ids[k] = got.ID
		})
	}
	wg.Wait()
	slices.Sort(ids)
	if len(slices.Compact(ids)) != 8 || slices.Contains(ids, si.ID) {
		t.Fatalf("IDs %v (first silence %d): not nine distinct ones", ids, si.ID)
	}
	eventually(t, 5*time.Second, "nine silences seen by both", func() bool {
		return len(a.List(time.Now())) == 9 && len(b.List(time.Now())) == 9
	})

	if err := b.Remove(si.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(si.ID); err != silence.ErrNotFound {
		t.Fatalf("second remove: %v, want ErrNotFound", err)
	}
	eventually(t, 5*time.Second, "a hears of the removal", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(removed) == 1 && removed[0].ID == si.ID && removed[0].Rule == "hot"
	})
	if !a.Silenced("hot", "greenhouse/east/temp", time.Now()).Before(si.Expires) {
		t.Fatal("a still applies the removed silence")
	}

	// Watching again (as after a watch nats.go ended) replays every key:
	// the silences held stay held, none is reported removed.
	a.stop()
	if err := a.watch(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if n := len(a.List(time.Now())); n != 8 || len(removed) != 1 {
		t.Fatalf("after watching again: %d silences, %d reported removed; want 8 and the one removed", n, len(removed))
	}
	mu.Unlock()

	late := open(nil)
	if n := len(late.List(time.Now())); n != 8 {
		t.Fatalf("an instance opened later lists %d silences, want 8", n)
	}
	// Expired silences are deleted by the sweep, and every instance
	// forgets them; an expiry is not a removal (what they held back was
	// scheduled for their end).
	short, err := b.Add(silence.Silence{Rule: "hot", Created: now, Expires: time.Now().Add(300 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a holds the short silence", func() bool { return len(a.List(time.Now())) == 9 })
	time.Sleep(400 * time.Millisecond)
	a.sweep(ctx, time.Now())
	eventually(t, 5*time.Second, "the expired silence deleted from the bucket", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		_, held := b.revs[short.ID]
		return !held && len(b.revs) == 8
	})
	mu.Lock()
	defer mu.Unlock()
	if len(removed) != 1 {
		t.Errorf("OnRemoved heard of %d silences, want only the one removed (not the expired one)", len(removed))
	}
}

// A watch that nats.go ends before the bucket's silences were all read
// (it does when it cannot keep the watch, as after a NATS node's loss) is
// an error, not the whole bucket: the silences already held stay, none
// is reported removed, and the watch is tried again.
func TestSilencesWatchEndedEarlyKeepsWhatItHolds(t *testing.T) {
	var removed []silence.Silence
	s := &Silences{kv: endedWatch{}, log: slog.New(slog.DiscardHandler), revs: map[uint64]uint64{7: 3}, seen: map[uint64]uint64{7: 3},
		onRemoved: func(si silence.Silence) { removed = append(removed, si) }}
	s.Put(silence.Silence{ID: 7, Rule: "hot", Expires: time.Now().Add(time.Hour)})
	if err := s.watch(context.Background()); err == nil {
		t.Fatal("a watch that ended early was taken for the whole bucket")
	}
	if len(s.List(time.Now())) != 1 || len(removed) != 0 {
		t.Fatalf("after the ended watch: %d silences, %d reported removed; want 1 and 0", len(s.List(time.Now())), len(removed))
	}
}

// endedWatch is a bucket whose watches end at once, before any value.
type endedWatch struct{ jetstream.KeyValue }

func (endedWatch) Watch(context.Context, string, ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return closedWatcher{}, nil
}

type closedWatcher struct{}

func (closedWatcher) Updates() <-chan jetstream.KeyValueEntry {
	ch := make(chan jetstream.KeyValueEntry)
	close(ch)
	return ch
}

func (closedWatcher) Stop() error { return nil }
