package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// salvaged are the buckets copied out of a damaged file: everything but
// the schema version, which the fresh store writes itself. Entries are
// copied as raw bytes; the packages that own them decide what decodes.
var salvaged = [][]byte{BucketOutbox, BucketDead, BucketAlerts, BucketSilences, BucketGroups, BucketSeries, BucketRules, BucketLastSeen, BucketQuarantine}

// Salvage is what was copied out of a store file.
type Salvage struct {
	Copied map[string]int // bucket → entries copied
	// Kept counts entries not copied because the store they were copied
	// into already had their key (only when salvaging into a store in use).
	Kept              map[string]int
	UnreadablePages   int    // pages skipped, with whatever was under them
	UnreadableEntries int    // entries skipped on pages that were read
	Note              string // why nothing could be read, when nothing could
}

// String lists the counts, for a log line: "outbox=18 dead=0 ...".
func (s Salvage) String() string {
	var b strings.Builder
	for i, name := range salvaged {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", name, s.Copied[string(name)])
	}
	return b.String()
}

// Total is the number of entries copied.
func (s Salvage) Total() int {
	n := 0
	for _, c := range s.Copied {
		n += c
	}
	return n
}

// SalvageFrom copies what can be read of the store file at from (a file
// moved aside, or an older copy) into db, keeping the entries db already
// has under the same keys. from is only read, never changed. A
// replicated store refuses: its replica is the truth, and the copy would
// bypass it.
func SalvageFrom(store *DB, from string) (Salvage, error) {
	if store.replica != nil {
		return Salvage{}, errors.New("salvage: not into a replicated store")
	}
	db := store.bolt
	f, err := os.Open(from)
	if err != nil {
		return Salvage{}, fmt.Errorf("salvage: %w", err)
	}
	defer f.Close()
	if same(f, db.Path()) {
		return Salvage{}, fmt.Errorf("salvage: %s is the store itself", from)
	}
	if err := lock(f, false, time.Now()); err != nil {
		return Salvage{}, fmt.Errorf("salvage %s: %w", from, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return Salvage{}, fmt.Errorf("salvage: %w", err)
	}
	return salvage(f, fi.Size(), db)
}

// same reports whether f is the file now at path.
func same(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

// salvage walks the damaged file tolerantly, from the tree of the meta
// page bbolt would use (and, for a bucket that tree has lost, from the
// tree of the other meta page, one transaction older), skipping what
// cannot be read, and copies alertd's buckets into db.
func salvage(r io.ReaderAt, size int64, db *bolt.DB) (sv Salvage, err error) {
	w := &copier{db: db, copied: map[string]int{}, kept: map[string]int{}, seq: map[string]uint64{}}
	defer func() {
		// Reading is bounded and checked; a panic would be a bug in it,
		// and must not cost the service its start.
		if p := recover(); p != nil {
			sv.Note = fmt.Sprintf("the salvage stopped early (%v)", p)
		}
		if ferr := w.finish(); ferr != nil && err == nil {
			err = ferr
		}
		sv.Copied, sv.Kept = w.copied, w.kept
	}()
	f := &file{r: r, size: size}
	metas, errs := f.metas()
	m, which, ok := current(metas, errs)
	switch {
	case size == 0:
		return sv, nil // the finding says it: nothing to add
	case !ok:
		sv.Note = "neither meta page is valid: nothing could be read"
		return sv, nil
	case uint64(size) < 2*uint64(f.pageSize):
		sv.Note = "the file is shorter than its two meta pages: nothing could be read"
		return sv, nil
	}
	trees := []meta{m}
	if other := 1 - which; errs[other] == nil && metas[other].pageSize == m.pageSize {
		trees = append(trees, metas[other])
	}
	var walks []*reader
	var heads []map[string][]byte
	for _, t := range trees {
		rd := &reader{file: f, seen: newBitset(f.pages()), sv: &sv}
		walks, heads = append(walks, rd), append(heads, rd.bucketHeaders(t.root))
	}
	if len(heads[0]) == 0 && (len(heads) == 1 || len(heads[1]) == 0) {
		sv.Note = "the root bucket could not be read: no bucket could be found"
		return sv, nil
	}
	for _, name := range salvaged {
		for i, rd := range walks {
			v := heads[i][string(name)]
			if v == nil || !rd.readable(v) {
				continue
			}
			if err := rd.bucket(v, func(k, v []byte) error { return w.add(name, k, v) }); err != nil {
				return sv, err
			}
			break
		}
	}
	return sv, nil
}

// reader is a tolerant walk of one tree: a page that cannot be read is
// counted and skipped, with what is under it.
type reader struct {
	*file
	seen bitset // pages already read, so a loop is walked once
	sv   *Salvage
}

// page reads a branch or leaf page not read before, or returns false.
func (r *reader) page(id uint64) (page, bool) {
	if id < r.pages() && r.seen.has(id) {
		return page{}, false
	}
	p, err := r.readPage(id, r.pages())
	if err != nil || (p.flags != flagBranch && p.flags != flagLeaf) {
		r.sv.UnreadablePages++
		return page{}, false
	}
	for i := id; i <= id+uint64(p.overflow); i++ {
		r.seen.set(i)
	}
	return p, true
}

// bucketHeaders returns the readable bucket headers of the root bucket,
// by name.
func (r *reader) bucketHeaders(root uint64) map[string][]byte {
	heads := map[string][]byte{}
	_ = r.tree(root, nil, nil, 0, func(e element) error {
		if e.bucket && len(e.value) >= bucketHeaderSize {
			heads[string(e.key)] = e.value
		}
		return nil
	})
	return heads
}

// readable reports whether a bucket's own root page can be read (an
// inline bucket always can): if not, the other tree may still have it.
func (r *reader) readable(v []byte) bool {
	root := order.Uint64(v)
	if root == 0 {
		return true
	}
	p, err := r.readPage(root, r.pages())
	return err == nil && (p.flags == flagBranch || p.flags == flagLeaf)
}

// bucket hands fn every readable key/value of a bucket (nested buckets,
// which alertd does not make, are skipped).
func (r *reader) bucket(v []byte, fn func(k, v []byte) error) error {
	visit := func(e element) error {
		if e.bucket || len(e.key) > bolt.MaxKeySize {
			r.sv.UnreadableEntries++
			return nil
		}
		return fn(e.key, e.value)
	}
	if root := order.Uint64(v); root != 0 {
		return r.tree(root, nil, nil, 0, visit)
	}
	inline := v[bucketHeaderSize:]
	if len(inline) < pageHeaderSize {
		r.sv.UnreadableEntries++
		return nil
	}
	p := parsePage(inline)
	p.inline = true
	if p.flags != flagLeaf {
		r.sv.UnreadableEntries++
		return nil
	}
	return r.elements(p, nil, nil, 0, visit)
}

// tree walks the subtree under page id, keeping only keys in [lo, hi): a
// key outside is on a page reused since it was linked there.
func (r *reader) tree(id uint64, lo, hi []byte, depth int, visit func(element) error) error {
	if depth > maxDepth {
		r.sv.UnreadablePages++
		return nil
	}
	p, ok := r.page(id)
	if !ok {
		return nil
	}
	return r.elements(p, lo, hi, depth, visit)
}

func (r *reader) elements(p page, lo, hi []byte, depth int, visit func(element) error) error {
	var es []element
	for i := range int(p.count) {
		e, err := p.element(i)
		if err != nil || (lo != nil && bytes.Compare(e.key, lo) < 0) || (hi != nil && bytes.Compare(e.key, hi) >= 0) {
			if p.flags == flagLeaf {
				r.sv.UnreadableEntries++
			} else {
				r.sv.UnreadablePages++
			}
			continue
		}
		es = append(es, e)
	}
	for i, e := range es {
		if p.flags == flagLeaf {
			if err := visit(e); err != nil {
				return err
			}
			continue
		}
		next := hi
		if i+1 < len(es) {
			next = es[i+1].key
		}
		if err := r.tree(e.child, e.key, next, depth+1, visit); err != nil {
			return err
		}
	}
	return nil
}

// copier writes salvaged entries into the store in transactions of a
// bounded size, so a large file is not held in memory whole.
type copier struct {
	db      *bolt.DB
	pending []entry
	bytes   int
	copied  map[string]int
	kept    map[string]int
	seq     map[string]uint64 // bucket → greatest sequence number its keys show
}

type entry struct {
	bucket []byte
	k, v   []byte
}

const (
	copyBatchEntries = 1000
	copyBatchBytes   = 4 << 20
)

func (c *copier) add(bucket, k, v []byte) error {
	c.pending = append(c.pending, entry{bucket, k, v})
	c.bytes += len(k) + len(v)
	if len(c.pending) >= copyBatchEntries || c.bytes >= copyBatchBytes {
		return c.flush()
	}
	return nil
}

func (c *copier) flush() error {
	if len(c.pending) == 0 {
		return nil
	}
	copied, kept := map[string]int{}, map[string]int{}
	err := c.db.Update(func(tx *bolt.Tx) error {
		clear(copied)
		clear(kept)
		for _, e := range c.pending {
			b := tx.Bucket(e.bucket)
			if b.Get(e.k) != nil || b.Bucket(e.k) != nil {
				kept[string(e.bucket)]++
				continue
			}
			if err := b.Put(e.k, e.v); err != nil {
				return fmt.Errorf("copy into bucket %s: %w", e.bucket, err)
			}
			copied[string(e.bucket)]++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("salvage: %w", err)
	}
	for _, e := range c.pending {
		if n, ok := sequenceOf(e.bucket, e.k); ok && n > c.seq[string(e.bucket)] {
			c.seq[string(e.bucket)] = n
		}
	}
	for name, n := range copied {
		c.copied[name] += n
	}
	for name, n := range kept {
		c.kept[name] += n
	}
	c.pending, c.bytes = c.pending[:0], 0
	return nil
}

// finish writes what is left and raises each bucket's NextSequence to the
// greatest id among its keys, so a new mail or silence never takes the id
// of a salvaged one. The outbox also counts the dead letters' ids: they
// were outbox ids, and a retried one goes back under its own.
func (c *copier) finish() error {
	if err := c.flush(); err != nil {
		return err
	}
	c.seq[string(BucketOutbox)] = max(c.seq[string(BucketOutbox)], c.seq[string(BucketDead)])
	return c.db.Update(func(tx *bolt.Tx) error {
		for name, n := range c.seq {
			b := tx.Bucket([]byte(name))
			if b.Sequence() >= n {
				continue
			}
			if err := b.SetSequence(n); err != nil {
				return fmt.Errorf("salvage: restore the sequence of bucket %s: %w", name, err)
			}
		}
		return nil
	})
}

// sequenceOf returns the NextSequence value a key was made from, for the
// buckets whose keys come from one: outbox and dead letters and silences
// (8 bytes big-endian), groups (rule, NUL, 20 decimal digits).
func sequenceOf(bucket, k []byte) (uint64, bool) {
	switch {
	case bytes.Equal(bucket, BucketOutbox), bytes.Equal(bucket, BucketDead), bytes.Equal(bucket, BucketSilences):
		if len(k) == 8 {
			return binary.BigEndian.Uint64(k), true
		}
	case bytes.Equal(bucket, BucketGroups):
		if i := bytes.LastIndexByte(k, 0); i >= 0 {
			n, err := strconv.ParseUint(string(k[i+1:]), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
