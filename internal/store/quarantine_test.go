package store

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
)

func TestQuarantineMovesReportsOnCommitAndDrops(t *testing.T) {
	db, _, err := Open(filepath.Join(t.TempDir(), "alertd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	id := binary.BigEndian.AppendUint64(nil, 7)
	raw := []byte("{\x00\x00")
	if err := db.Update(func(tx *Tx) error { return tx.Bucket(BucketOutbox).Put(id, raw) }); err != nil {
		t.Fatal(err)
	}
	var reported []Quarantined
	report := func(q Quarantined) { reported = append(reported, q) }

	// A rolled-back move moves nothing and reports nothing.
	errAbort := errors.New("abort")
	err = db.Update(func(tx *Tx) error {
		if err := Quarantine(tx, BucketOutbox, id, tx.Bucket(BucketOutbox).Get(id), errors.New("bad"), report); err != nil {
			return err
		}
		return errAbort
	})
	if !errors.Is(err, errAbort) || len(reported) != 0 {
		t.Fatalf("rolled back: %v, %d reports", err, len(reported))
	}

	if err := db.Update(func(tx *Tx) error {
		return Quarantine(tx, BucketOutbox, id, tx.Bucket(BucketOutbox).Get(id), errors.New("decode outbox entry: bad"), report)
	}); err != nil {
		t.Fatal(err)
	}
	if len(reported) != 1 || reported[0].Bucket != "outbox" || reported[0].KeyText() != "7" || string(reported[0].Raw) != string(raw) {
		t.Fatalf("reported %+v", reported)
	}
	_ = db.View(func(tx *Tx) error {
		if tx.Bucket(BucketOutbox).Get(id) != nil {
			t.Error("the entry is still in its bucket")
		}
		got := QuarantinedFrom(tx, BucketOutbox)
		if len(got) != 1 || got[0].Error != "decode outbox entry: bad" || string(got[0].Raw) != string(raw) || got[0].At.IsZero() {
			t.Errorf("quarantined from outbox: %+v", got)
		}
		if other := QuarantinedFrom(tx, BucketDead); len(other) != 0 {
			t.Errorf("quarantined from dead: %+v", other)
		}
		if n := CountQuarantined(tx); n["outbox"] != 1 || n["dead"] != 0 || len(n) != len(quarantinable) {
			t.Errorf("counts %v", n)
		}
		return nil
	})

	if err := db.Update(func(tx *Tx) error {
		if ok, err := DropQuarantined(tx, BucketOutbox, id); !ok || err != nil {
			t.Errorf("drop: %v %v", ok, err)
		}
		if ok, _ := DropQuarantined(tx, BucketOutbox, id); ok {
			t.Error("dropped twice")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A quarantine record that is itself damaged is still listed under the
// bucket and key its quarantine key names, so it can be dropped.
func TestDamagedQuarantineRecordIsStillNamed(t *testing.T) {
	db, _, err := Open(filepath.Join(t.TempDir(), "alertd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	k := []byte("hot\x00s/a/t")
	if err := db.Update(func(tx *Tx) error {
		return tx.Bucket(BucketQuarantine).Put(quarantineKey(BucketSeries, k), []byte("\x00\x00"))
	}); err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *Tx) error {
		q, ok := GetQuarantined(tx, BucketSeries, k)
		if !ok || q.Bucket != "series" || q.KeyText() != `"hot\x00s/a/t"` || q.Error == "" {
			t.Errorf("damaged record: %+v %v", q, ok)
		}
		return nil
	})
}
