package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestOpenCreatesAPrivateStoreWithItsBuckets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "alertd.db")
	db, recovered, err := Open(path)
	if err != nil || recovered != nil {
		t.Fatalf("open: %v %+v", err, recovered)
	}
	defer db.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("store file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				t.Errorf("bucket %s missing", b)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A file bbolt cannot read is moved aside, named, and a fresh store starts:
// alertd comes up instead of crash-looping.
func TestCorruptFileIsMovedAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alertd.db")
	garbage := []byte(strings.Repeat("not a bbolt file ", 1000))
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	db, recovered, err := Open(path)
	if err != nil {
		t.Fatalf("open a corrupt file: %v", err)
	}
	defer db.Close()
	if recovered == nil || !strings.HasPrefix(recovered.MovedTo, path+".corrupt-") {
		t.Fatalf("recovered %+v, want the moved-aside file's name", recovered)
	}
	if kept, err := os.ReadFile(recovered.MovedTo); err != nil || string(kept) != string(garbage) {
		t.Errorf("the corrupt file was not kept intact for inspection: %v", err)
	}
}

func TestSecondOpenFailsFastWithErrLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alertd.db")
	db, _, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	_, err = OpenExisting(path, 100*time.Millisecond)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second open took %v", d)
	}
}

func TestOpenExistingCreatesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alertd.db")
	if _, err := OpenExisting(path, time.Second); err == nil {
		t.Fatal("OpenExisting of a missing file succeeded")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenExisting created %s", path)
	}
}

