// Package store owns alertd's bbolt file: opening it safely (one owner,
// mode 0600, a lock timeout instead of a hang, a corrupt file moved aside
// instead of a crash loop) and the names of its buckets. The packages that
// keep state in it (dedupe, outbox, alerts) own the contents of their buckets.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Buckets, created at open so readers never meet a missing one.
var (
	BucketSeries   = []byte("series")   // dedupe: rule\x00topic -> last mail time
	BucketRules    = []byte("rules")    // dedupe: rule -> rate window, held-back count
	BucketOutbox   = []byte("outbox")   // outbox: id (8 bytes BE) -> pending entry
	BucketDead     = []byte("dead")     // outbox: id -> entry that will not be delivered
	BucketMeta     = []byte("meta")     // schema version
	BucketAlerts   = []byte("alerts")   // alerts: rule\x00topic -> series state
	BucketSilences = []byte("silences") // silence: id (8 bytes BE) -> silence
	BucketGroups   = []byte("groups")   // app: rule\x00seq -> notification waiting for its group mail
)

// BucketLastSeen is alerts': rule\x00topic -> a silence series' last reading (unix ns, 8 bytes BE) and readings seen (1 byte).
var BucketLastSeen = []byte("last_seen")

var allBuckets = [][]byte{BucketSeries, BucketRules, BucketOutbox, BucketDead, BucketMeta, BucketAlerts, BucketSilences, BucketGroups, BucketLastSeen}

// SchemaVersion is written at creation; a newer file is refused rather than
// misread.
const SchemaVersion = 1

// ErrLocked means another process holds the store file.
var ErrLocked = errors.New("store is locked by another process (is another alertd running on the same store.path?)")

// LockTimeout is how long Open waits for the file lock: long enough for a
// restarting service to release it, short enough that a second instance
// fails visibly instead of hanging.
const LockTimeout = 3 * time.Second

// Open opens (or creates) the store at path. A file bbolt cannot read is
// renamed to path.corrupt-<time> and a fresh store is created, with the
// returned Recovered naming the moved file so the caller can log it loudly.
func Open(path string) (db *bolt.DB, recovered string, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, "", fmt.Errorf("open store: %w", err)
	}
	db, err = open(path, LockTimeout)
	var corrupt *corruptError
	if errors.As(err, &corrupt) {
		recovered = fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405"))
		if rerr := os.Rename(path, recovered); rerr != nil {
			return nil, "", fmt.Errorf("open store %s: %v; moving it aside failed: %w", path, err, rerr)
		}
		db, err = open(path, LockTimeout)
	}
	if err != nil {
		return nil, "", err
	}
	return db, recovered, nil
}

type corruptError struct{ cause any }

func (e *corruptError) Error() string { return fmt.Sprintf("store file is corrupt: %v", e.cause) }

// OpenExisting opens the store at path for an admin command: it creates
// nothing, repairs nothing, and waits at most timeout for the lock (then
// returns an error wrapping ErrLocked: the service is running).
func OpenExisting(path string, timeout time.Duration) (*bolt.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return open(path, timeout)
}

func open(path string, timeout time.Duration) (db *bolt.DB, err error) {
	// bbolt panics on some corrupt files ("invalid freelist page"); a panic
	// here must become an error, or alertd would crash-loop forever.
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				_ = db.Close()
			}
			db, err = nil, &corruptError{cause: r}
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout: timeout,
		// The freelist is rebuilt at open instead of written at every
		// commit: one write less per fsync'd transaction (etcd does the same).
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, &corruptError{cause: err}
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := initBuckets(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	// Batch (one fsync for the alerts of concurrent readings) waits this
	// long for company. bbolt's 10 ms default was most of an alert's
	// latency; a storm still shares fsyncs at 2 ms.
	db.MaxBatchDelay = 2 * time.Millisecond
	return db, nil
}

func initBuckets(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(BucketMeta)
		v := meta.Get([]byte("version"))
		switch {
		case v == nil:
			return meta.Put([]byte("version"), []byte{SchemaVersion})
		case len(v) != 1 || v[0] > SchemaVersion:
			return fmt.Errorf("store was written by a newer alertd (schema %v); refusing to touch it", v)
		}
		return nil
	})
}
