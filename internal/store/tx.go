package store

import (
	"bytes"
	"errors"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// DB is alertd's store: the one owner of the bbolt file. The packages that
// keep state in it (outbox, dedupe, alerts, silences, groups) say what
// they read and write through a Tx and its Buckets; none of them sees
// bbolt. That keeps the file, its buckets, its transactions and their
// batching in one place, and is the seam a replicated store takes
// (replica.go).
type DB struct {
	bolt      *bolt.DB
	group     group
	replica   *replicaState // nil unless OpenReplicated
	closeOnce sync.Once
	closeErr  error
}

func wrap(db *bolt.DB) *DB { return &DB{bolt: db} }

// Update runs fn in a read-write transaction, committed (fsync'd) when fn
// returns nil and rolled back otherwise.
//
// In a replicated store (OpenReplicated) the transaction's writes are
// committed to the replica first; an error of the replica rolls it back
// and is returned wrapped.
func (d *DB) Update(fn func(*Tx) error) error {
	return d.bolt.Update(func(tx *bolt.Tx) error {
		if d.replica != nil {
			return d.replicate(tx, fn)
		}
		return fn(&Tx{tx: tx})
	})
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

// Check runs bbolt's own consistency check of the whole file (tests, and
// alertd store check on a file alertd holds).
func (d *DB) Check() error {
	return d.bolt.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// Tx is one transaction. Byte slices it returns are valid only until the
// transaction ends: clone what must outlive it.
type Tx struct {
	tx *bolt.Tx
	w  *writeSet // what the transaction writes, for a replica; nil without one
}

// Bucket is one of the store's buckets in tx (all are created at open);
// nil for a name the store does not have.
func (t *Tx) Bucket(name []byte) *Bucket {
	b := t.tx.Bucket(name)
	if b == nil {
		return nil
	}
	if t.w == nil {
		return &Bucket{b: b}
	}
	return &Bucket{b: b, w: t.w, name: bucketName(name)}
}

// bucketName is the store's own copy of a bucket's name, which no caller
// can change while a replica holds it.
func bucketName(name []byte) []byte {
	for _, b := range allBuckets {
		if bytes.Equal(b, name) {
			return b
		}
	}
	return bytes.Clone(name)
}

// Writable reports whether tx may write.
func (t *Tx) Writable() bool { return t.tx.Writable() }

// OnCommit runs fn once tx has committed (never if it rolls back).
func (t *Tx) OnCommit(fn func()) { t.tx.OnCommit(fn) }

// Bucket is a bucket in a transaction.
type Bucket struct {
	b    *bolt.Bucket
	w    *writeSet // the transaction's, in a replicated store
	name []byte    // set with w
}

// Get returns the value of key, nil when absent.
func (b *Bucket) Get(key []byte) []byte { return b.b.Get(key) }

// Put sets key to value.
func (b *Bucket) Put(key, value []byte) error {
	if b.w == nil {
		return b.b.Put(key, value)
	}
	// A value the key already has is no change for the replica.
	old := b.b.Get(key)
	same := old != nil && bytes.Equal(old, value)
	if err := b.b.Put(key, value); err != nil || same {
		return err
	}
	b.w.put(b.name, key, value, false)
	return nil
}

// Delete removes key; an absent key is not an error.
func (b *Bucket) Delete(key []byte) error {
	if b.w == nil {
		return b.b.Delete(key)
	}
	// Nor is an absent key a change (the replica has what the file has):
	// alerts deletes the record of a series back to ok at every reading.
	absent := b.b.Get(key) == nil
	if err := b.b.Delete(key); err != nil || absent {
		return err
	}
	b.w.put(b.name, key, nil, true)
	return nil
}

// NextSequence returns the bucket's next id (1, 2, ...), rolled back with
// the transaction.
func (b *Bucket) NextSequence() (uint64, error) {
	v, err := b.b.NextSequence()
	if err == nil && b.w != nil {
		b.w.seq(b.name)
	}
	return v, err
}

// Sequence is the last id handed out.
func (b *Bucket) Sequence() uint64 { return b.b.Sequence() }

// SetSequence sets the last id handed out.
func (b *Bucket) SetSequence(v uint64) error {
	if err := b.b.SetSequence(v); err != nil {
		return err
	}
	if b.w != nil {
		b.w.seq(b.name)
	}
	return nil
}

// ForEach calls fn for each key in order; fn must not change the bucket.
func (b *Bucket) ForEach(fn func(k, v []byte) error) error { return b.b.ForEach(fn) }

// Len is the number of keys (committed ones: a key added in this
// transaction is counted after it commits).
func (b *Bucket) Len() int { return b.b.Stats().KeyN }

// Cursor walks the bucket in key order.
func (b *Bucket) Cursor() *Cursor { return &Cursor{c: b.b.Cursor()} }

// Cursor is a position in a bucket. Delete changes what Next returns:
// collect keys first and delete them after the walk.
type Cursor struct{ c *bolt.Cursor }

// First moves to the first key; nil when the bucket is empty.
func (c *Cursor) First() (k, v []byte) { return c.c.First() }

// Last moves to the last key.
func (c *Cursor) Last() (k, v []byte) { return c.c.Last() }

// Next moves to the next key; nil at the end.
func (c *Cursor) Next() (k, v []byte) { return c.c.Next() }

// Prev moves to the previous key.
func (c *Cursor) Prev() (k, v []byte) { return c.c.Prev() }

// Seek moves to the first key at or after seek.
func (c *Cursor) Seek(seek []byte) (k, v []byte) { return c.c.Seek(seek) }
