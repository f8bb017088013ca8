package store

import (
	"encoding/binary"
	"path/filepath"
	"testing"
)

// BenchmarkUpdateNoSync is the write path without the disk: a transaction
// of a NextSequence and three Puts into two buckets, as an outbox put and
// an alert record make, on a file opened with NoSync, so that what is
// measured is the store's own cost (allocations, capture) around bbolt.
func BenchmarkUpdateNoSync(b *testing.B) {
	db, _, err := Open(filepath.Join(b.TempDir(), "alertd.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.bolt.NoSync = true
	val := make([]byte, 200)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		err := db.Update(func(tx *Tx) error {
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
