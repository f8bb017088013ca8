package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeReplica records the write sets committed to it, and refuses with
// err while err is set. hook, if set, runs first in every Commit.
type fakeReplica struct {
	mu      sync.Mutex
	commits [][]Write
	err     error
	hook    func(n int)
}

func (f *fakeReplica) Commit(writes []Write) error {
	if f.hook != nil {
		f.hook(len(writes))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.commits = append(f.commits, writes)
	return nil
}

func (f *fakeReplica) all() [][]Write {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.commits)
}

func openReplicatedTemp(t *testing.T, r Replica, load func(put func(bucket, key, value []byte) error) error) *DB {
	t.Helper()
	if load == nil {
		load = func(func(bucket, key, value []byte) error) error { return nil }
	}
	db, err := OpenReplicated(filepath.Join(t.TempDir(), "alertd.db"), r, load)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Check(); err != nil {
			t.Error(err)
		}
		db.Close()
	})
	return db
}

func get(t *testing.T, db *DB, bucket []byte, key string) []byte {
	t.Helper()
	var v []byte
	if err := db.View(func(tx *Tx) error {
		v = bytes.Clone(tx.Bucket(bucket).Get([]byte(key)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func put(db *DB, bucket []byte, key, value string) error {
	return db.Update(func(tx *Tx) error { return tx.Bucket(bucket).Put([]byte(key), []byte(value)) })
}

func writesText(ws []Write) string {
	var out []string
	for _, w := range ws {
		v := fmt.Sprintf("%q", w.Value)
		if w.Delete {
			v = "deleted"
		}
		out = append(out, fmt.Sprintf("%q/%q=%s", w.Bucket, w.Key, v))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func TestReplicaSeesOneWriteSetPerTransaction(t *testing.T) {
	r := &fakeReplica{}
	db := openReplicatedTemp(t, r, nil)
	if err := put(db, BucketMeta, "gone", "x"); err != nil {
		t.Fatal(err)
	}
	err := db.Update(func(tx *Tx) error {
		ob, ab := tx.Bucket(BucketOutbox), tx.Bucket(BucketAlerts)
		key := []byte("k")
		for _, v := range []string{"1", "2", "3"} {
			if err := ab.Put(key, []byte(v)); err != nil {
				return err
			}
		}
		key[0] = 'x' // bbolt copies keys: a caller may reuse its buffer
		if err := ab.Put([]byte("d"), []byte("v")); err != nil {
			return err
		}
		if err := ab.Delete([]byte("d")); err != nil {
			return err
		}
		if err := ab.Delete([]byte("never there")); err != nil {
			return err
		}
		if err := tx.Bucket(BucketMeta).Delete([]byte("gone")); err != nil {
			return err
		}
		if _, err := ob.NextSequence(); err != nil {
			return err
		}
		if _, err := ob.NextSequence(); err != nil {
			return err
		}
		return tx.Bucket(BucketSilences).SetSequence(41)
	})
	if err != nil {
		t.Fatal(err)
	}
	got := r.all()
	if len(got) != 2 {
		t.Fatalf("%d commits, want 2 (one per write transaction)", len(got))
	}
	seq := func(n uint64) string { return fmt.Sprintf("%q", binary.BigEndian.AppendUint64(nil, n)) }
	want := strings.Join([]string{
		`"\x00seq"/"outbox"=` + seq(2),
		`"\x00seq"/"silences"=` + seq(41),
		`"alerts"/"d"=deleted`,
		`"alerts"/"k"="3"`,
		`"meta"/"gone"=deleted`,
	}, " ")
	if g := writesText(got[1]); g != want {
		t.Errorf("write set\n got %s\nwant %s", g, want)
	}
}

func TestReplicaUnchangedIsNotWritten(t *testing.T) {
	r := &fakeReplica{}
	db := openReplicatedTemp(t, r, nil)
	if err := put(db, BucketRules, "r", "same"); err != nil {
		t.Fatal(err)
	}
	if err := put(db, BucketRules, "r", "same"); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.Bucket(BucketRules).Delete([]byte("absent")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *Tx) error { tx.Bucket(BucketRules).Get([]byte("r")); return nil }); err != nil {
		t.Fatal(err)
	}
	if n := len(r.all()); n != 1 {
		t.Errorf("%d commits, want 1: rewriting a value, deleting an absent key and reading change nothing", n)
	}
}

func TestReplicaRefusalRollsBack(t *testing.T) {
	refused := errors.New("fenced")
	r := &fakeReplica{}
	db := openReplicatedTemp(t, r, nil)
	if err := put(db, BucketAlerts, "k", "before"); err != nil {
		t.Fatal(err)
	}
	r.err = fmt.Errorf("commit: %w", refused)
	committed := false
	err := db.Update(func(tx *Tx) error {
		tx.OnCommit(func() { committed = true })
		if _, err := tx.Bucket(BucketOutbox).NextSequence(); err != nil {
			return err
		}
		return tx.Bucket(BucketAlerts).Put([]byte("k"), []byte("after"))
	})
	if !errors.Is(err, refused) {
		t.Fatalf("Update: %v, want the replica's error", err)
	}
	if err := db.Batch(func(tx *Tx) error { return tx.Bucket(BucketAlerts).Put([]byte("k"), []byte("batched")) }); !errors.Is(err, refused) {
		t.Fatalf("Batch: %v, want the replica's error", err)
	}
	if v := get(t, db, BucketAlerts, "k"); string(v) != "before" || committed {
		t.Errorf("after a refused commit: %q (committed %v), want %q", v, committed, "before")
	}
	r.err = nil
	if err := db.Update(func(tx *Tx) error {
		if s := tx.Bucket(BucketOutbox).Sequence(); s != 0 {
			return fmt.Errorf("sequence %d after the rollback, want 0", s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestReplicaReopenIsSticky(t *testing.T) {
	r := &fakeReplica{err: fmt.Errorf("outcome unknown: %w", ErrReopen)}
	db := openReplicatedTemp(t, r, nil)
	if err := put(db, BucketAlerts, "k", "v"); !errors.Is(err, ErrReopen) {
		t.Fatalf("Update: %v, want ErrReopen", err)
	}
	r.err = nil
	if err := put(db, BucketAlerts, "k", "v"); !errors.Is(err, ErrReopen) {
		t.Fatalf("Update after ErrReopen: %v, want ErrReopen again", err)
	}
	if n := len(r.all()); n != 0 {
		t.Errorf("%d commits reached the replica after ErrReopen", n)
	}
}

// A transaction the replica committed and bbolt did not (a disk error)
// leaves the file behind: the next write transaction sees it and refuses.
func TestReplicaLocalCommitFailureIsSticky(t *testing.T) {
	r := &fakeReplica{}
	db := openReplicatedTemp(t, r, nil)
	if err := put(db, BucketAlerts, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := put(db, BucketAlerts, "k", "v2"); err != nil {
		t.Fatalf("after a transaction bbolt committed: %v", err)
	}
	db.replica.expect-- // as if bbolt had failed to commit the last one
	if err := put(db, BucketAlerts, "k", "v3"); !errors.Is(err, ErrReopen) {
		t.Fatalf("after a transaction bbolt did not commit: %v, want ErrReopen", err)
	}
	if err := db.Batch(func(tx *Tx) error { return nil }); !errors.Is(err, ErrReopen) {
		t.Fatalf("Batch after that: %v, want ErrReopen", err)
	}
}

func TestReplicaTooManyWrites(t *testing.T) {
	r := &fakeReplica{}
	db := openReplicatedTemp(t, r, nil)
	many := func(n int) func(*Tx) error {
		return func(tx *Tx) error {
			for i := range n {
				if err := tx.Bucket(BucketSeries).Put(fmt.Appendf(nil, "%04d", i), fmt.Appendf(nil, "%d", n)); err != nil {
					return err
				}
			}
			return nil
		}
	}
	if err := db.Update(many(MaxReplicaWrites)); err != nil {
		t.Fatalf("%d writes: %v", MaxReplicaWrites, err)
	}
	err := db.Update(func(tx *Tx) error {
		if err := many(MaxReplicaWrites + 1)(tx); err != nil {
			return err
		}
		_, err := tx.Bucket(BucketOutbox).NextSequence() // one more write
		return err
	})
	if !errors.Is(err, ErrTooManyWrites) || !strings.Contains(err.Error(), "900") {
		t.Fatalf("Update of %d writes: %v, want ErrTooManyWrites naming the bound", MaxReplicaWrites+1, err)
	}
	if err := db.Batch(many(MaxReplicaWrites + 1)); !errors.Is(err, ErrTooManyWrites) {
		t.Fatalf("Batch of %d writes: %v, want ErrTooManyWrites", MaxReplicaWrites+1, err)
	}
	if n := len(r.all()); n != 1 {
		t.Errorf("%d commits, want 1", n)
	}
}

// A group whose write set would pass the bound is committed in parts,
// each within it, and every member is committed.
func TestReplicaGroupIsSplit(t *testing.T) {
	const n = 1500
	r := &fakeReplica{}
	db := openReplicatedTemp(t, r, nil)
	// The first commit waits until every other writer has queued, so the
	// next group is as large as a group gets (maxGroup).
	var first sync.Once
	r.hook = func(int) { first.Do(func() { waitFor(t, func() bool { return queued(db) == n-1 }) }) }
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := db.Batch(func(tx *Tx) error {
				return tx.Bucket(BucketSeries).Put(fmt.Appendf(nil, "%04d", i), []byte("v"))
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var sizes []int
	total := 0
	for _, c := range r.all() {
		sizes = append(sizes, len(c))
		total += len(c)
	}
	if total != n || slices.Max(sizes) != MaxReplicaWrites {
		t.Errorf("commits of %v writes: want %d in all, the largest %d", sizes, n, MaxReplicaWrites)
	}
	if err := db.View(func(tx *Tx) error {
		if got := tx.Bucket(BucketSeries).Len(); got != n {
			return fmt.Errorf("%d keys stored, want %d", got, n)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// A member that fails inside a split group still runs alone and gets its
// own error; the others are committed.
func TestReplicaGroupFailureStillRunsAlone(t *testing.T) {
	const n = 1000
	r := &fakeReplica{}
	db := openReplicatedTemp(t, r, nil)
	var first sync.Once
	r.hook = func(int) { first.Do(func() { waitFor(t, func() bool { return queued(db) == n-1 }) }) }
	bad := errors.New("bad member")
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = db.Batch(func(tx *Tx) error {
				if i == 950 {
					return bad
				}
				return tx.Bucket(BucketSeries).Put(fmt.Appendf(nil, "%04d", i), []byte("v"))
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if (i == 950) != errors.Is(err, bad) || (i != 950 && err != nil) {
			t.Errorf("member %d: %v", i, err)
		}
	}
	if err := db.View(func(tx *Tx) error {
		if got := tx.Bucket(BucketSeries).Len(); got != n-1 {
			return fmt.Errorf("%d keys stored, want %d", got, n-1)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

func TestOpenReplicatedReplacesTheFileWithTheLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alertd.db")
	old, _, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := put(old, BucketAlerts, "stale", "x"); err != nil {
		t.Fatal(err)
	}
	if err := removeStore(path, 10*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("replacing a store in use: %v, want ErrLocked", err)
	}
	old.Close()
	const keys = loadBatch + 5 // more than one load transaction
	load := func(put func(bucket, key, value []byte) error) error {
		for i := range keys {
			if err := put(BucketSeries, fmt.Appendf(nil, "%05d", i), []byte("v")); err != nil {
				return err
			}
		}
		return put(seqBucket, BucketOutbox, binary.BigEndian.AppendUint64(nil, 77))
	}
	r := &fakeReplica{}
	db, err := OpenReplicated(path, r, load)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(func(tx *Tx) error {
		if tx.Bucket(BucketAlerts).Get([]byte("stale")) != nil {
			return errors.New("the old file's key survived")
		}
		if n := tx.Bucket(BucketSeries).Len(); n != keys {
			return fmt.Errorf("%d keys loaded, want %d", n, keys)
		}
		if s := tx.Bucket(BucketOutbox).Sequence(); s != 77 {
			return fmt.Errorf("outbox sequence %d, want 77", s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := len(r.all()); n != 0 {
		t.Errorf("the load made %d replica commits", n)
	}
	if _, err := SalvageFrom(db, path+".other"); err == nil {
		t.Error("SalvageFrom into a replicated store: no error")
	}
	db.Close()
	_, err = OpenReplicated(path, r, func(put func(bucket, key, value []byte) error) error {
		return put([]byte("nosuch"), []byte("k"), []byte("v"))
	})
	if err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("load into an unknown bucket: %v", err)
	}
}

func TestNoCaptureWithoutReplica(t *testing.T) {
	db := openTemp(t)
	if err := db.Update(func(tx *Tx) error {
		if tx.w != nil || tx.Bucket(BucketMeta).w != nil {
			return errors.New("a store without a replica captures writes")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if db.replica != nil {
		t.Fatal("Open made a replicated store")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		time.Sleep(time.Millisecond)
	}
}
