package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A replicated store is a local bbolt file whose every committed write
// transaction was first committed to a Replica, which holds the truth:
// the file is rebuilt from the replica at open (OpenReplicated), and each
// write transaction's changes (its write set) are handed to the replica
// after the transaction's functions succeeded and before bbolt commits.
// A replica that refuses rolls the transaction back, so the file never
// holds what the replica does not. The packages that keep state write
// through Tx and Bucket as always and do not know.
//
// The write set of a transaction is every Bucket.Put and Bucket.Delete,
// the last one of each key only, and, for each bucket whose sequence
// changed (NextSequence, SetSequence), a write of its final sequence to
// the reserved bucket name "\x00seq" (key: the bucket's name, value: 8
// bytes big-endian), which OpenReplicated's load turns back into the
// bucket's sequence. The buckets themselves and the schema version are
// the store's own, written at open and never replicated. Keys rewritten
// with the value they have, and deletes of absent keys, are not changes.
//
// Every write of a replicated store goes through Update, as Batch's groups
// do: Quarantine and PutMeta are transactions like any other. What writes
// the file directly is never used on one: the recovery of a damaged file
// belongs to Open (OpenReplicated builds a fresh file instead), and
// SalvageFrom refuses a replicated store.

// Write is one change of a write transaction: Value stored under Bucket
// and Key, or the key removed when Delete is set.
type Write struct {
	Bucket, Key, Value []byte
	Delete             bool
}

// Replica is where a replicated store's write transactions are committed
// first. Commit stores writes, all or nothing, or returns an error, and
// the local transaction then rolls back. writes holds at most
// MaxReplicaWrites entries, one per distinct bucket and key; the slices
// are the replica's to keep.
type Replica interface {
	Commit(writes []Write) error
}

// MaxReplicaWrites bounds the write set of one transaction in a
// replicated store: 900, leaving a replica whose batches hold 1000
// messages room for its own (alertd's cluster state adds one, its fence).
// A group commit that writes more is committed in several transactions;
// a single Update or Batch call that writes more fails with
// ErrTooManyWrites.
const MaxReplicaWrites = 900

// seqBucket is the reserved bucket name under which a replica receives
// bucket sequences. No bucket of the store starts with a NUL.
var seqBucket = []byte("\x00seq")

// Errors of a replicated store.
var (
	// ErrTooManyWrites: one transaction writes more keys than
	// MaxReplicaWrites. Nothing was written.
	ErrTooManyWrites = errors.New("transaction writes more keys than one replica commit carries")
	// ErrReopen: the replica may hold a transaction the local file does
	// not (the replica's commit landed, or may have, and the local one
	// did not). The store refuses every later write transaction: close
	// it and open it again from the replica with OpenReplicated. A
	// Replica returns an error wrapping ErrReopen for the outcomes it
	// cannot settle itself.
	ErrReopen = errors.New("replicated store is behind its replica: reopen it from the replica")
)

// OpenReplicated creates a fresh store at path, filled with what load
// puts, whose write transactions are committed to r first. A file
// already at path is removed (once no other alertd holds it): the replica
// is the truth. load is called once and calls put for every key of every
// bucket, and for every sequence (bucket "\x00seq", as replicated); put
// copies what it is given and fails on a bucket the store does not have.
// The load is not committed to r. The file is made durable once loaded.
func OpenReplicated(path string, r Replica, load func(put func(bucket, key, value []byte) error) error) (*DB, error) {
	if r == nil {
		return nil, errors.New("open replicated store: no replica")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open replicated store: %w", err)
	}
	if err := removeStore(path, LockTimeout); err != nil {
		return nil, err
	}
	db, err := open(path, LockTimeout, true)
	if err != nil {
		return nil, err
	}
	if err := loadStore(db, load); err != nil {
		_ = db.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("open replicated store %s: %w", path, err)
	}
	d := wrap(db)
	d.replica = &replicaState{r: r}
	return d, nil
}

// removeStore removes the store file at path, if any, while holding its
// lock: an alertd still using it keeps it, and this one fails with
// ErrLocked instead of building a second store beside it.
func removeStore(path string, timeout time.Duration) error {
	f, _, err := lockFile(path, false, timeout)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("open replicated store: remove the old file: %w", err)
	}
	return nil
}

// loadBatch bounds the keys one load transaction writes, so that a large
// partition does not hold all of its dirty pages in memory at once.
const loadBatch = 10000

// loadStore fills db with what load puts, loadBatch keys per transaction.
func loadStore(db *bolt.DB, load func(put func(bucket, key, value []byte) error) error) error {
	tx, err := db.Begin(true)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer func() {
		if tx != nil {
			_ = tx.Rollback()
		}
	}()
	n := 0
	put := func(bucket, key, value []byte) error {
		if n == loadBatch {
			if err := tx.Commit(); err != nil {
				tx = nil
				return err
			}
			if tx, err = db.Begin(true); err != nil {
				tx = nil
				return err
			}
			n = 0
		}
		n++
		return loadOne(tx, bucket, key, value)
	}
	if err := load(put); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	err = tx.Commit()
	tx = nil
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	return nil
}

func loadOne(tx *bolt.Tx, bucket, key, value []byte) error {
	if bytes.Equal(bucket, seqBucket) {
		b := tx.Bucket(key)
		if b == nil {
			return fmt.Errorf("sequence of bucket %q: not a bucket of the store", key)
		}
		if len(value) != 8 {
			return fmt.Errorf("sequence of bucket %q: %d bytes, want 8", key, len(value))
		}
		return b.SetSequence(binary.BigEndian.Uint64(value))
	}
	b := tx.Bucket(bucket)
	if b == nil {
		return fmt.Errorf("bucket %q: not a bucket of the store", bucket)
	}
	return b.Put(bytes.Clone(key), bytes.Clone(value))
}

// replicaState is a replicated DB's replica and whether the file fell
// behind it. Its fields are used under bbolt's writer lock only.
type replicaState struct {
	r Replica
	// expect, when not 0, is the id the next write transaction has if
	// bbolt committed the last one the replica committed. (bbolt runs
	// commit hooks after it let the next writer in, so a hook cannot say.)
	expect uint64
	behind error // wraps ErrReopen once set; never cleared
}

// check refuses the write transaction tx once the file is behind the
// replica: when bbolt failed to commit (a disk error) a transaction the
// replica had committed.
func (s *replicaState) check(tx *bolt.Tx) error {
	if s.expect != 0 {
		if uint64(tx.ID()) != s.expect {
			s.fallBehind(fmt.Errorf("%w: the file failed to commit a transaction the replica committed", ErrReopen))
		}
		s.expect = 0
	}
	return s.behind
}

func (s *replicaState) fallBehind(err error) {
	if s.behind == nil {
		s.behind = err
	}
}

// replicate runs fn in tx and commits its write set to the replica; a
// failure of either rolls tx back. It is called with bbolt's writer lock
// held, so one at a time.
func (d *DB) replicate(tx *bolt.Tx, fn func(*Tx) error) error {
	rs := d.replica
	if err := rs.check(tx); err != nil {
		return err
	}
	t := &Tx{tx: tx, w: &writeSet{}}
	if err := fn(t); err != nil {
		return err
	}
	writes := t.w.final(tx)
	if len(writes) == 0 {
		return nil
	}
	if len(writes) > MaxReplicaWrites {
		return fmt.Errorf("replicate transaction: %d writes, at most %d: %w", len(writes), MaxReplicaWrites, ErrTooManyWrites)
	}
	if err := rs.r.Commit(writes); err != nil {
		if errors.Is(err, ErrReopen) {
			rs.fallBehind(err)
		}
		return fmt.Errorf("replicate transaction of %d writes: %w", len(writes), err)
	}
	// Until bbolt has committed too, the file is behind the replica; the
	// next write transaction checks that it did.
	rs.expect = uint64(tx.ID()) + 1
	return nil
}

// writeSet is what a replicated write transaction changed.
type writeSet struct {
	writes []Write
	at     map[writeKey]int // index in writes of each bucket and key
	seqs   [][]byte         // buckets whose sequence changed
}

type writeKey struct{ bucket, key string }

// full reports whether the transaction writes more than one replica
// commit carries; false without a replica.
func (w *writeSet) full() bool {
	return w != nil && len(w.writes)+len(w.seqs) > MaxReplicaWrites
}

// put records a Put or a Delete, replacing an earlier one of the key. The
// key and value are copied: bbolt copies keys, so a caller may reuse its
// key buffer once Put returns.
func (w *writeSet) put(bucket, key, value []byte, del bool) {
	k := writeKey{string(bucket), string(key)}
	wr := Write{Bucket: bucket, Key: bytes.Clone(key), Delete: del}
	if wr.Key == nil {
		wr.Key = []byte{}
	}
	if !del {
		wr.Value = append([]byte{}, value...)
	}
	if i, ok := w.at[k]; ok {
		w.writes[i] = wr
		return
	}
	if w.at == nil {
		w.at = map[writeKey]int{}
	}
	w.at[k] = len(w.writes)
	w.writes = append(w.writes, wr)
}

// seq records that bucket's sequence changed.
func (w *writeSet) seq(bucket []byte) {
	for _, b := range w.seqs {
		if bytes.Equal(b, bucket) {
			return
		}
	}
	w.seqs = append(w.seqs, bucket)
}

// final is the write set, with the sequences as they are at the end of tx.
func (w *writeSet) final(tx *bolt.Tx) []Write {
	out := w.writes
	for _, name := range w.seqs {
		v := binary.BigEndian.AppendUint64(nil, tx.Bucket(name).Sequence())
		out = append(out, Write{Bucket: seqBucket, Key: bytes.Clone(name), Value: v})
	}
	return out
}
