package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A store last written with its freelist (bbolt's default, as a file
// written without alertd's options would be) is checked against it too,
// as tx.Check does: every page in use or free, never both, free once.
func TestStoreWithAWrittenFreelist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alertd.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := initBuckets(db); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		if err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(BucketAlerts)
			for i := range 200 {
				if err := b.Put(fmt.Appendf(nil, "rule\x00dev-%d-%d", round, i), bytes.Repeat([]byte("v"), 100)); err != nil {
					return err
				}
			}
			return b.Delete(fmt.Appendf(nil, "rule\x00dev-%d-%d", round, 7))
		}); err != nil {
			t.Fatal(err)
		}
	}
	o := &original{}
	if err := db.View(func(tx *bolt.Tx) error { o.data = contents(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if o.image, err = os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	f := &file{r: bytes.NewReader(o.image), size: int64(len(o.image))}
	m, _, ok := current(f.metas())
	if !ok || m.freelist == noFreelist {
		t.Fatalf("the store has no freelist: %+v", m)
	}
	o.pageSize = f.pageSize
	at := int(m.freelist) * f.pageSize
	count := int(binary.NativeEndian.Uint16(o.image[at+10:]))
	if count < 2 {
		t.Fatalf("the freelist lists %d pages", count)
	}
	id := func(img []byte, i int) []byte { return img[at+pageHeaderSize+8*i:][:8] }

	h := newHarness(t, o)
	h.run("a written freelist", o.image, "ok", nil)
	for _, c := range []struct {
		name string
		do   func(img []byte)
	}{
		{"a page freed twice", func(img []byte) { copy(id(img, 1), id(img, 0)) }},
		{"a page in use and free", func(img []byte) { binary.NativeEndian.PutUint64(id(img, 0), m.root) }},
		{"a page neither in use nor free", func(img []byte) { binary.NativeEndian.PutUint16(img[at+10:], uint16(count-1)) }},
		{"a free page past the end", func(img []byte) { binary.NativeEndian.PutUint64(id(img, 0), m.pgid+5) }},
		{"a freelist page that is not one", func(img []byte) { binary.NativeEndian.PutUint16(img[at+8:], flagLeaf) }},
		{"a freelist that lists more than it holds", func(img []byte) { binary.NativeEndian.PutUint16(img[at+10:], 0xFFFE) }},
	} {
		img := bytes.Clone(o.image)
		c.do(img)
		h.run(c.name, img, "damaged", map[string]int{"alerts": all})
	}
	h.finish()
}
