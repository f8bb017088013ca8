package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Quarantine: an entry whose value its package cannot decode is moved to
// the quarantine bucket, bytes and error kept, instead of failing every
// read that meets it. What was behind it keeps flowing; the operator is
// told (log, metric) and can inspect or drop it. Nothing in alertd ever
// reads a quarantined value back as state: it is evidence, not data.
//
// Quarantine keys are source bucket + 0x00 + original key, so the entries
// of one source bucket are adjacent and an entry keeps its original key
// (an outbox id stays the id the operator knows).

// Quarantined is one entry kept aside.
type Quarantined struct {
	Bucket string    `json:"bucket"` // the bucket it came from
	Key    []byte    `json:"key"`    // its key there
	Raw    []byte    `json:"raw"`    // its value, as found
	Error  string    `json:"error"`  // why it could not be decoded
	At     time.Time `json:"at"`     // when it was moved
}

// KeyText is Key for a log line or a listing: the decimal id in the
// buckets keyed by a sequence, else the key quoted.
func (q Quarantined) KeyText() string {
	if idKeyed(q.Bucket) && len(q.Key) == 8 {
		return strconv.FormatUint(binary.BigEndian.Uint64(q.Key), 10)
	}
	return strconv.Quote(string(q.Key))
}

func idKeyed(bucket string) bool {
	for _, b := range [][]byte{BucketOutbox, BucketDead, BucketSilences} {
		if bucket == string(b) {
			return true
		}
	}
	return false
}

// quarantinable are the buckets whose values are decoded, so the only
// sources of quarantined entries.
var quarantinable = [][]byte{BucketOutbox, BucketDead, BucketSilences, BucketGroups, BucketSeries, BucketRules, BucketAlerts}

func quarantineKey(bucket, key []byte) []byte {
	k := make([]byte, 0, len(bucket)+1+len(key))
	return append(append(append(k, bucket...), 0), key...)
}

// Quarantine moves the value raw under key in bucket to the quarantine
// bucket with cause, inside tx (a write transaction): the key is deleted
// from bucket. Pass raw as read in tx (it is copied). report, when not
// nil, receives the record once tx has committed, and never if it rolls
// back, so a move is logged and counted exactly once: bbolt runs a Batch
// function again after a failed batch, and each run reports nothing until
// its transaction commits.
func Quarantine(tx *Tx, bucket, key, raw []byte, cause error, report func(Quarantined)) error {
	q := Quarantined{Bucket: string(bucket), Key: bytes.Clone(key), Raw: bytes.Clone(raw), Error: cause.Error(), At: time.Now().UTC()}
	v, err := json.Marshal(q)
	if err != nil {
		return fmt.Errorf("quarantine %s entry: %w", bucket, err)
	}
	qb := tx.Bucket(BucketQuarantine) // created at open
	if err := qb.Put(quarantineKey(bucket, key), v); err != nil {
		return fmt.Errorf("quarantine %s entry: %w", bucket, err)
	}
	if b := tx.Bucket(bucket); b != nil {
		if err := b.Delete(key); err != nil {
			return fmt.Errorf("quarantine %s entry: %w", bucket, err)
		}
	}
	if report != nil {
		tx.OnCommit(func() { report(q) })
	}
	return nil
}

// QuarantinedFrom returns the entries quarantined from bucket, in key
// order (for an id-keyed bucket, the order they were queued in).
func QuarantinedFrom(tx *Tx, bucket []byte) []Quarantined {
	qb := tx.Bucket(BucketQuarantine)
	if qb == nil {
		return nil
	}
	var out []Quarantined
	prefix := quarantineKey(bucket, nil)
	c := qb.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		out = append(out, decodeQuarantined(bucket, k[len(prefix):], v))
	}
	return out
}

// GetQuarantined returns the entry quarantined from bucket under key.
func GetQuarantined(tx *Tx, bucket, key []byte) (Quarantined, bool) {
	qb := tx.Bucket(BucketQuarantine)
	if qb == nil {
		return Quarantined{}, false
	}
	v := qb.Get(quarantineKey(bucket, key))
	if v == nil {
		return Quarantined{}, false
	}
	return decodeQuarantined(bucket, key, v), true
}

// decodeQuarantined reads a record. Its bucket and key come from the
// quarantine key, so even a damaged record is listed, named and droppable.
func decodeQuarantined(bucket, key, v []byte) Quarantined {
	var q Quarantined
	if err := json.Unmarshal(v, &q); err != nil {
		q = Quarantined{Raw: bytes.Clone(v), Error: "quarantine record unreadable: " + err.Error()}
	}
	q.Bucket, q.Key = string(bucket), bytes.Clone(key)
	return q
}

// DropQuarantined deletes the entry quarantined from bucket under key,
// reporting whether there was one.
func DropQuarantined(tx *Tx, bucket, key []byte) (bool, error) {
	qb := tx.Bucket(BucketQuarantine)
	if qb == nil || qb.Get(quarantineKey(bucket, key)) == nil {
		return false, nil
	}
	if err := qb.Delete(quarantineKey(bucket, key)); err != nil {
		return false, fmt.Errorf("drop quarantined %s entry: %w", bucket, err)
	}
	return true, nil
}

// CountQuarantined returns how many entries are in quarantine, by the
// bucket they came from; every bucket that can be a source is present,
// with 0 when none of its entries is.
func CountQuarantined(tx *Tx) map[string]int {
	n := make(map[string]int, len(quarantinable))
	for _, b := range quarantinable {
		n[string(b)] = 0
	}
	qb := tx.Bucket(BucketQuarantine)
	if qb == nil {
		return n
	}
	_ = qb.ForEach(func(k, _ []byte) error {
		if source, _, ok := bytes.Cut(k, []byte{0}); ok {
			n[string(source)]++
		}
		return nil
	})
	return n
}
