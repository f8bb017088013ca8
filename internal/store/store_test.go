package store

import (
	"bytes"
	"encoding/binary"
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
	if err := db.bolt.View(func(tx *bolt.Tx) error {
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

// damagedCopy writes a copy of the original store with one outbox page
// that says it is page 0, and returns its path and bytes.
func damagedCopy(t *testing.T) (string, []byte) {
	t.Helper()
	o := makeOriginal(t)
	img := bytes.Clone(o.image)
	id := o.pagesHolding("outbox mail")[1]
	clear(img[int(id)*o.pageSize:][:8])
	path := filepath.Join(t.TempDir(), "alertd.db")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, img
}

// An admin command is told the file is damaged, and the file stays where
// and as it is, for the service to deal with.
func TestOpenExistingRefusesADamagedFileAndLeavesIt(t *testing.T) {
	path, img := damagedCopy(t)
	_, err := OpenExisting(path, time.Second)
	var damage *Damage
	if !errors.As(err, &damage) || !strings.Contains(damage.Finding, "says it is page 0") || damage.Path != path {
		t.Fatalf("OpenExisting: %v, want the damage", err)
	}
	if err := Check(path); !errors.As(err, &damage) {
		t.Errorf("Check: %v, want the damage", err)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, img) {
		t.Errorf("the damaged file changed (%v)", err)
	}
	if moved, _ := filepath.Glob(path + ".*"); len(moved) != 0 {
		t.Errorf("files beside the store: %v", moved)
	}
}

// Once recovered, the fresh store opens quietly; a half-built fresh store
// left by a crash during an earlier recovery is replaced.
func TestRecoveryHappensOnce(t *testing.T) {
	path, _ := damagedCopy(t)
	if err := os.WriteFile(path+".salvage", []byte("left by a crash"), 0o600); err != nil {
		t.Fatal(err)
	}
	db, rec, err := Open(path)
	if err != nil || rec == nil {
		t.Fatalf("open: %v %+v", err, rec)
	}
	if rec.Salvaged.Copied["outbox"] == 0 || rec.Salvaged.Note != "" {
		t.Errorf("salvaged %+v", rec.Salvaged)
	}
	if _, err := os.Stat(path + ".salvage"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the salvage's temporary file is left: %v", err)
	}
	db.Close()
	db, rec, err = Open(path)
	if err != nil || rec != nil {
		t.Fatalf("second open: %v %+v", err, rec)
	}
	db.Close()
	if moved, _ := filepath.Glob(path + ".corrupt-*"); len(moved) != 1 {
		t.Errorf("moved-aside files %v, want one", moved)
	}
}

// Salvaging again from the moved-aside file into a store in use keeps
// what the store has, counts what it kept, and keeps new ids clear of the
// salvaged ones.
func TestSalvageFromIntoAStoreInUse(t *testing.T) {
	path, _ := damagedCopy(t)
	db, rec, err := Open(path)
	if err != nil || rec == nil {
		t.Fatalf("open: %v %+v", err, rec)
	}
	defer db.Close()
	if _, err := SalvageFrom(db, path); err == nil || !strings.Contains(err.Error(), "is the store itself") {
		t.Errorf("salvage from the store itself: %v", err)
	}
	var seq uint64
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketOutbox)
		seq, _ = b.NextSequence()
		return b.Put(binary.BigEndian.AppendUint64(nil, seq), []byte("new mail"))
	}); err != nil {
		t.Fatal(err)
	}
	sv, err := SalvageFrom(db, rec.MovedTo)
	if err != nil {
		t.Fatal(err)
	}
	if sv.Total() != 0 || sv.Kept["outbox"] != rec.Salvaged.Copied["outbox"] || sv.Kept["series"] != rec.Salvaged.Copied["series"] {
		t.Errorf("salvaged again %+v, want everything kept as it was (first time %+v)", sv, rec.Salvaged)
	}
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(BucketOutbox).Get(binary.BigEndian.AppendUint64(nil, seq)); string(v) != "new mail" {
			t.Errorf("the new mail became %q", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
