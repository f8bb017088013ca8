package store

import (
	"bytes"
	"errors"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Bucket names one of the store's buckets; all are created at open.
type Bucket string

// DB is alertd's store: the one owner of the bbolt file. The packages that
// keep state in it say what they want read or written through a Tx; none
// of them sees bbolt. That keeps the buckets, the transactions and their
// batching in one place, and is the seam a replicated store would take.
type DB struct {
	bolt      *bolt.DB
	closeOnce sync.Once
	closeErr  error
}

// Wrap makes a DB of an open bbolt file (Open does this).
func Wrap(db *bolt.DB) *DB { return &DB{bolt: db} }

// Update runs fn in a read-write transaction, committed (fsync'd) when fn
// returns nil and rolled back otherwise.
func (d *DB) Update(fn func(*Tx) error) error {
	return d.bolt.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// Batch is Update shared with concurrent callers: one commit (one fsync)
// for several transactions. fn may run more than once, so it must depend
// only on its arguments and assign its results afresh each time.
func (d *DB) Batch(fn func(*Tx) error) error {
	return d.bolt.Batch(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// View runs fn in a read-only transaction; readers run in parallel.
func (d *DB) View(fn func(*Tx) error) error {
	return d.bolt.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// Close closes the file. It may be called more than once.
func (d *DB) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.bolt.Close() })
	return d.closeErr
}

// Path is the file's path.
func (d *DB) Path() string { return d.bolt.Path() }

// Tx is one transaction. Byte slices it returns are valid only until the
// transaction ends: clone what must outlive it.
type Tx struct{ tx *bolt.Tx }

// ErrReadOnly means a write was attempted in a View.
var ErrReadOnly = errors.New("store: write in a read-only transaction")

func (t *Tx) bucket(b Bucket) *bolt.Bucket {
	bk := t.tx.Bucket([]byte(b))
	if bk == nil {
		// Every bucket is created at open; a missing one is a bug.
		panic("store: unknown bucket " + string(b))
	}
	return bk
}

// Get returns the value of key, nil when absent.
func (t *Tx) Get(b Bucket, key []byte) []byte { return t.bucket(b).Get(key) }

// Put sets key to value.
func (t *Tx) Put(b Bucket, key, value []byte) error {
	if !t.tx.Writable() {
		return ErrReadOnly
	}
	return t.bucket(b).Put(key, value)
}

// Delete removes key; deleting an absent key is not an error.
func (t *Tx) Delete(b Bucket, key []byte) error {
	if !t.tx.Writable() {
		return ErrReadOnly
	}
	return t.bucket(b).Delete(key)
}

// NextSequence returns the bucket's next id (1, 2, ...), rolled back with
// the transaction.
func (t *Tx) NextSequence(b Bucket) (uint64, error) {
	if !t.tx.Writable() {
		return 0, ErrReadOnly
	}
	return t.bucket(b).NextSequence()
}

// Sequence is the bucket's last id handed out.
func (t *Tx) Sequence(b Bucket) uint64 { return t.bucket(b).Sequence() }

// SetSequence sets the bucket's last id (restoring salvaged entries).
func (t *Tx) SetSequence(b Bucket, v uint64) error {
	if !t.tx.Writable() {
		return ErrReadOnly
	}
	return t.bucket(b).SetSequence(v)
}

// Scan calls fn for each key starting with prefix (all keys for a nil
// prefix), in key order, until fn returns false or an error. fn must not
// write to the bucket it scans: collect keys and change them afterwards.
func (t *Tx) Scan(b Bucket, prefix []byte, fn func(k, v []byte) (more bool, err error)) error {
	c := t.bucket(b).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		more, err := fn(k, v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// ScanFrom is Scan from the first key at or after start.
func (t *Tx) ScanFrom(b Bucket, start []byte, fn func(k, v []byte) (more bool, err error)) error {
	c := t.bucket(b).Cursor()
	for k, v := c.Seek(start); k != nil; k, v = c.Next() {
		more, err := fn(k, v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// First returns the bucket's first key and value (nil when empty).
func (t *Tx) First(b Bucket) (k, v []byte) { return t.bucket(b).Cursor().First() }

// Count is the number of keys in the bucket.
func (t *Tx) Count(b Bucket) int { return t.bucket(b).Stats().KeyN }
