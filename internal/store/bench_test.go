package store

import (
	"encoding/binary"
	"path/filepath"
	"testing"
)

// benchUpdate is the write path without the disk: transactions of a
// NextSequence and three Puts into two buckets, as an outbox put and an
// alert record make, on a file with NoSync, so that what is measured is
// the store's own cost (allocations, capture) around bbolt.
func benchUpdate(b *testing.B, db *DB) {
	defer db.Close()
	db.bolt.NoSync = true
	val := make([]byte, 200)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		err := db.Update(func(tx *Tx) error {
			val[0] = byte(i) // a change every time (bbolt keeps val until the commit)
			ob := tx.Bucket(BucketOutbox)
			id, err := ob.NextSequence()
			if err != nil {
				return err
			}
			k := binary.BigEndian.AppendUint64(nil, id)
			if err := ob.Put(k, val); err != nil {
				return err
			}
			ab := tx.Bucket(BucketAlerts)
			if err := ab.Put([]byte("rule\x00topic"), val); err != nil {
				return err
			}
			return ab.Put([]byte("rule\x00other"), val)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateNoSync: a store without a replica, the single-node
// hot path.
func BenchmarkUpdateNoSync(b *testing.B) {
	db, _, err := Open(filepath.Join(b.TempDir(), "alertd.db"))
	if err != nil {
		b.Fatal(err)
	}
	benchUpdate(b, db)
}

// BenchmarkUpdateNoSyncReplicated: the same with a replica that accepts
// at once, so the figure is the capture's cost alone.
func BenchmarkUpdateNoSyncReplicated(b *testing.B) {
	db, err := OpenReplicated(filepath.Join(b.TempDir(), "alertd.db"), nopReplica{},
		func(func(bucket, key, value []byte) error) error { return nil })
	if err != nil {
		b.Fatal(err)
	}
	benchUpdate(b, db)
}

type nopReplica struct{}

func (nopReplica) Commit([]Write) error { return nil }
