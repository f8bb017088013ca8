// Package store owns alertd's bbolt file: opening it safely (one owner,
// mode 0600, a lock timeout instead of a hang) and the names of its
// buckets. The file is read and checked before bbolt maps it, since bbolt
// panics or faults on a damaged file where no recover reaches; a damaged
// file is moved aside intact, and what can be read of it is copied into a
// fresh store, instead of a crash loop. It is the only package that
// imports bbolt: the packages that keep state in it (dedupe, outbox,
// alerts, silence, notify's groups, app's meta keys; see the bucket list)
// own the contents of their buckets and write them through Tx and Bucket.
//
// A store may also be replicated (OpenReplicated, replica.go): the file is
// then rebuilt from a Replica at open, and every write transaction's
// changes are committed to the replica before bbolt commits them, so the
// file never holds what the replica does not. That is how alertd's
// cluster mode keeps each partition's store in its partition state; the
// packages that write through Tx and Bucket do not know. Without a
// replica nothing is captured.
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
	BucketMeta     = []byte("meta")     // store: "version"; app: "mqtt_session_filters" (meta.go)
	BucketAlerts   = []byte("alerts")   // alerts: rule\x00topic -> series state
	BucketSilences = []byte("silences") // silence: id (8 bytes BE) -> silence
	BucketGroups   = []byte("groups")   // notify: rule\x00seq -> notification waiting for its group or summary mail
	// store: bucket\x00key -> an entry of bucket that could not be decoded (quarantine.go)
	BucketQuarantine = []byte("quarantine")
)

// BucketLastSeen is alerts': rule\x00topic -> a silence series' last reading (unix ns, 8 bytes BE) and readings seen (1 byte).
var BucketLastSeen = []byte("last_seen")

var allBuckets = [][]byte{BucketSeries, BucketRules, BucketOutbox, BucketDead, BucketMeta, BucketAlerts, BucketSilences, BucketGroups, BucketQuarantine, BucketLastSeen}

// SchemaVersion is written at creation; a newer file is refused rather than
// misread.
const SchemaVersion = 1

// ErrLocked means another process holds the store file.
var ErrLocked = errors.New("store is locked by another process (is another alertd running on the same store.path?)")

// LockTimeout is how long Open waits for the file lock: long enough for a
// restarting service to release it, short enough that a second instance
// fails visibly instead of hanging.
const LockTimeout = 3 * time.Second

// Recovery says what Open did with a damaged store file.
type Recovery struct {
	MovedTo  string  // where the damaged file now is, as it was
	Finding  string  // the first thing found wrong with it
	Salvaged Salvage // what was copied from it into the fresh store
}

// Open opens (or creates) the store at path. The file is checked before
// bbolt maps it: a damaged one (cut short, pages overwritten, empty) is
// moved aside intact to path.corrupt-<UTC time>, what can be read of
// alertd's buckets is copied into a fresh store, and the returned
// Recovery says so, for the caller to log loudly. A missing file is
// created, and Recovery is nil, as it is for a sound file.
func Open(path string) (*DB, *Recovery, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, fmt.Errorf("open store: %w", err)
	}
	db, err := open(path, LockTimeout, true)
	var damage *Damage
	if !errors.As(err, &damage) {
		if err != nil {
			return nil, nil, err
		}
		return wrap(db), nil, nil
	}
	rec, err := replace(path)
	if err != nil {
		return nil, nil, err
	}
	if db, err = open(path, LockTimeout, false); err != nil {
		return nil, nil, fmt.Errorf("open the fresh store: %w", err)
	}
	return wrap(db), rec, nil
}

// OpenExisting opens the store at path for an admin command: it creates
// nothing, repairs nothing, and waits at most timeout for the lock (then
// returns an error wrapping ErrLocked: the service is running). A damaged
// file is an error wrapping *Damage.
func OpenExisting(path string, timeout time.Duration) (*DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	db, err := open(path, timeout, false)
	if err != nil {
		return nil, err
	}
	return wrap(db), nil
}

// open locks the file at path (creating it when create is set and it is
// missing), checks it unless it was just created, and only then hands it,
// still locked, to bbolt.
func open(path string, timeout time.Duration, create bool) (*bolt.DB, error) {
	f, created, err := lockFile(path, create, timeout)
	if err != nil {
		return nil, err
	}
	if !created {
		if err := check(f); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	return openBolt(f)
}

// lockFile opens the file at path and takes its exclusive lock, making
// sure the file locked is still the one at path: a file another alertd
// replaced while this one waited is let go, and the new one locked.
func lockFile(path string, create bool, timeout time.Duration) (f *os.File, created bool, err error) {
	deadline := time.Now().Add(timeout)
	for {
		created = false
		if create {
			f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
			created = err == nil
		}
		if !created {
			f, err = os.OpenFile(path, os.O_RDWR, 0)
		}
		if err != nil {
			return nil, false, fmt.Errorf("open store: %w", err)
		}
		if err := lock(f, true, deadline); err != nil {
			_ = f.Close()
			return nil, false, fmt.Errorf("open store %s: %w", path, err)
		}
		if same(f, path) {
			return f, created, nil
		}
		_ = f.Close()
	}
}

// openBolt hands bbolt the locked file f, which bbolt then owns.
func openBolt(f *os.File) (db *bolt.DB, err error) {
	path := f.Name()
	// Belt and braces: the check passed, so bbolt should not panic; if
	// it does, the file is treated as damaged rather than crash alertd.
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				_ = db.Close()
			}
			_ = f.Close()
			db, err = nil, &Damage{Path: path, Finding: fmt.Sprintf("bbolt failed on it: %v", r)}
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		// The lock is held already: bbolt takes it again on the same file
		// at once.
		Timeout:  LockTimeout,
		OpenFile: func(string, int, os.FileMode) (*os.File, error) { return f, nil },
		// The freelist is rebuilt at open instead of written at every
		// commit: one write less per fsync'd transaction (etcd does the same).
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, &Damage{Path: path, Finding: err.Error()}
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := initBuckets(db); err != nil {
		_ = db.Close()
		return nil, err
	}
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
