package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTemp(t *testing.T) *DB {
	t.Helper()
	db, _, err := Open(filepath.Join(t.TempDir(), "alertd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func queued(d *DB) int {
	d.group.mu.Lock()
	defer d.group.mu.Unlock()
	return len(d.group.queue)
}

func committing(d *DB) bool {
	d.group.mu.Lock()
	defer d.group.mu.Unlock()
	return d.group.running
}

// Writers that arrive while a commit runs go together in the next one.
func TestBatchGroupsTheWritersThatArriveDuringACommit(t *testing.T) {
	db := openTemp(t)
	release := make(chan struct{})
	var leaderTx *bolt.Tx
	leaderDone := make(chan error)
	go func() {
		leaderDone <- db.Batch(func(tx *Tx) error {
			leaderTx = tx.tx
			<-release
			return tx.Bucket(BucketMeta).Put([]byte("test-leader"), []byte("1"))
		})
	}()
	for queued(db) != 0 || !committing(db) {
		time.Sleep(time.Millisecond) // the leader has taken its group
	}
	const n = 20
	var mu sync.Mutex
	txs := map[*bolt.Tx]int{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			err := db.Batch(func(tx *Tx) error {
				mu.Lock()
				txs[tx.tx]++
				mu.Unlock()
				return tx.Bucket(BucketMeta).Put(fmt.Appendf(nil, "test-%02d", i), []byte("1"))
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	for queued(db) != n {
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := <-leaderDone; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if len(txs) != 1 {
		t.Fatalf("the %d writers that queued behind one commit used %d transactions, want 1", n, len(txs))
	}
	for tx := range txs {
		if tx == leaderTx {
			t.Fatal("the queued writers ran in the leader's transaction")
		}
	}
	err := db.View(func(tx *Tx) error {
		for i := range n {
			if tx.Bucket(BucketMeta).Get(fmt.Appendf(nil, "test-%02d", i)) == nil {
				return fmt.Errorf("writer %d's key is missing", i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if committing(db) {
		t.Fatal("the group is still marked running with nobody queued: the next writer would wait forever")
	}
}

// A member that fails does not fail the others; it gets its own error.
func TestBatchMemberThatFailsIsRunAloneAndTheOthersCommit(t *testing.T) {
	db := openTemp(t)
	release := make(chan struct{})
	go db.Batch(func(*Tx) error { <-release; return nil })
	for queued(db) != 0 || !committing(db) {
		time.Sleep(time.Millisecond)
	}
	refused := errors.New("refused")
	var runs atomic.Int32
	errs := make([]error, 5)
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			errs[i] = db.Batch(func(tx *Tx) error {
				if err := tx.Bucket(BucketMeta).Put(fmt.Appendf(nil, "test-%d", i), []byte("1")); err != nil {
					return err
				}
				if i == 2 {
					runs.Add(1)
					return refused
				}
				return nil
			})
		})
	}
	for queued(db) != 5 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		if i == 2 && !errors.Is(err, refused) {
			t.Fatalf("the failing writer got %v, want its own error", err)
		}
		if i != 2 && err != nil {
			t.Fatalf("writer %d got %v because another failed", i, err)
		}
	}
	if runs.Load() < 2 {
		t.Fatalf("the failing function ran %d times: it is run alone after the group", runs.Load())
	}
	_ = db.View(func(tx *Tx) error {
		for i := range 5 {
			got := tx.Bucket(BucketMeta).Get(fmt.Appendf(nil, "test-%d", i)) != nil
			if got != (i != 2) {
				t.Errorf("writer %d's key present=%v", i, got)
			}
		}
		return nil
	})
}

// A panic in one writer's function is that writer's panic, not the
// leader's, and the store keeps working.
func TestBatchPanicIsTheWritersOwn(t *testing.T) {
	db := openTemp(t)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("Batch did not re-panic in the writer's goroutine")
			}
		}()
		_ = db.Batch(func(*Tx) error { panic("boom") })
	}()
	if err := db.Batch(func(tx *Tx) error { return tx.Bucket(BucketMeta).Put([]byte("test-after"), []byte("1")) }); err != nil {
		t.Fatalf("the store stopped working after a panic: %v", err)
	}
}

// Many writers that read and write the same key lose no update.
func TestBatchUnderContentionLosesNoUpdate(t *testing.T) {
	db := openTemp(t)
	const writers, each = 50, 20
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				err := db.Batch(func(tx *Tx) error {
					b := tx.Bucket(BucketMeta)
					var n int
					if v := b.Get([]byte("test-counter")); v != nil {
						fmt.Sscan(string(v), &n)
					}
					return b.Put([]byte("test-counter"), fmt.Append(nil, n+1))
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	_ = db.View(func(tx *Tx) error {
		if got := string(tx.Bucket(BucketMeta).Get([]byte("test-counter"))); got != fmt.Sprint(writers*each) {
			t.Errorf("counter = %s, want %d", got, writers*each)
		}
		return nil
	})
}

// A panic in the commit itself (here an OnCommit hook) is the leader's
// panic, and the store goes on: the writer queued behind it commits, and
// so does the next one.
func TestBatchPanicInTheCommitLeavesTheStoreWorking(t *testing.T) {
	db := openTemp(t)
	release := make(chan struct{})
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		_ = db.Batch(func(tx *Tx) error {
			tx.OnCommit(func() { panic("hook") })
			<-release
			return nil
		})
	}()
	for queued(db) != 0 || !committing(db) {
		time.Sleep(time.Millisecond)
	}
	queuedErr := make(chan error, 1)
	go func() {
		queuedErr <- db.Batch(func(tx *Tx) error { return tx.Bucket(BucketMeta).Put([]byte("test-queued"), []byte("1")) })
	}()
	for queued(db) != 1 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	if p := <-panicked; p == nil {
		t.Fatal("the hook's panic did not reach the leader's caller")
	}
	select {
	case err := <-queuedErr:
		if err != nil {
			t.Fatalf("the writer queued behind the panic: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the writer queued behind a panicking commit waits forever")
	}
	done := make(chan error, 1)
	go func() {
		done <- db.Batch(func(tx *Tx) error { return tx.Bucket(BucketMeta).Put([]byte("test-after"), []byte("1")) })
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the store accepts no write after a panicking commit")
	}
}
