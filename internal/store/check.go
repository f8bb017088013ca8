package store

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// Damage is what the check of a store file found wrong with it: the first
// thing that would make bbolt refuse the file, panic on it or fault.
type Damage struct {
	Path    string
	Finding string // e.g. "page 35 says it is page 0"
}

func (d *Damage) Error() string {
	return fmt.Sprintf("store file %s is damaged: %s", d.Path, d.Finding)
}

// Check reads the store file at path without changing it and returns nil
// if alertd can open it, a *Damage if it cannot, an error wrapping
// ErrLocked if a running alertd holds it (a running alertd checked it when
// it started), or the error that kept it from reading the file.
func Check(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("check store: %w", err)
	}
	defer f.Close()
	if err := lock(f, false, time.Now().Add(200*time.Millisecond)); err != nil {
		return fmt.Errorf("check store %s: %w", path, err)
	}
	return check(f)
}

// check reads the whole of f once, with ReadAt and no mmap, and tests
// everything bbolt's Open, its freelist rebuild (which walks every page in
// use) and tx.Check would trip on: both meta pages, the file's length
// against the pages in use, and every page reachable from the root bucket.
func check(f *os.File) (err error) {
	defer func() {
		// The checks are bounded; a panic here is a bug in them, and the
		// file that caused it is not one to give to bbolt either.
		if r := recover(); r != nil {
			err = &Damage{Path: f.Name(), Finding: fmt.Sprintf("unreadable (%v)", r)}
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("check store: %w", err)
	}
	finding, err := checkFile(f, fi.Size())
	if err != nil {
		return fmt.Errorf("check store %s: %w", f.Name(), err)
	}
	if finding != "" {
		return &Damage{Path: f.Name(), Finding: finding}
	}
	return nil
}

// checkFile returns the first finding ("" when the file is sound), or an
// error when the file could not be read at all.
func checkFile(r io.ReaderAt, size int64) (string, error) {
	if size == 0 {
		return "the file is empty", nil
	}
	f := &file{r: r, size: size}
	metas, errs := f.metas()
	m, which, ok := current(metas, errs)
	if !ok {
		return fmt.Sprintf("neither meta page is valid (page 0: %v; page 1: %v)", errs[0], errs[1]), nil
	}
	ps := uint64(f.pageSize)
	switch {
	case uint64(size) < 2*ps:
		return fmt.Sprintf("the file is %d bytes, shorter than the two %d-byte meta pages every store begins with", size, ps), nil
	case uint64(m.pageSize) != ps:
		return fmt.Sprintf("meta page %d says pages are %d bytes, the other %d", which, m.pageSize, ps), nil
	case m.pgid > f.pages():
		return fmt.Sprintf("the file has %d pages but its meta page says %d are in use: it was cut short", f.pages(), m.pgid), nil
	case m.root < 2 || m.root >= m.pgid:
		return fmt.Sprintf("the root bucket is on page %d, outside the %d pages in use", m.root, m.pgid), nil
	case m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.pgid):
		return fmt.Sprintf("the freelist is on page %d, outside the %d pages in use", m.freelist, m.pgid), nil
	}
	// tx.Check reads both meta pages as pages, the invalid one too: each
	// must say which page it is and be of a known type.
	for id := range uint64(2) {
		b, err := f.readMetaPage(int64(id * ps))
		if err != nil {
			return "", err
		}
		if h := parsePage(b); h.id != id || !knownType(h.flags) {
			return fmt.Sprintf("meta page %d says it is page %d, of type %s", id, h.id, typeName(h.flags)), nil
		}
	}
	c := &checker{file: f, pgid: m.pgid, used: newBitset(m.pgid)}
	c.used.set(0)
	c.used.set(1)
	var free []uint64
	if m.freelist != noFreelist {
		ids, err := c.freelist(m.freelist)
		if err != nil {
			return err.Error(), nil
		}
		free = ids
	}
	if err := c.rootBucket(m.root); err != nil {
		return err.Error(), nil
	}
	if m.freelist != noFreelist {
		return c.freeCoverage(free), nil
	}
	return "", nil
}

// checker walks the tree of one meta page.
type checker struct {
	*file
	pgid uint64 // pages in use
	used bitset // pages reached so far
}

// page reads page id for the tree, which bbolt requires to be a branch or
// leaf page reached once.
func (c *checker) page(id uint64) (page, error) {
	p, err := c.readPage(id, c.pgid)
	if err != nil {
		return page{}, err
	}
	if p.flags != flagBranch && p.flags != flagLeaf {
		return page{}, fmt.Errorf("page %d is a %s page where a branch or leaf page belongs", id, typeName(p.flags))
	}
	for i := id; i <= id+uint64(p.overflow); i++ {
		if c.used.has(i) {
			return page{}, fmt.Errorf("page %d is used twice", i)
		}
		c.used.set(i)
	}
	return p, nil
}

func (c *checker) rootBucket(id uint64) error {
	p, err := c.page(id)
	if err != nil {
		return err
	}
	// Every key of the root bucket is a bucket: bbolt's Tx.ForEach hands
	// each one out as a *Bucket, and CreateBucketIfNotExists refuses a
	// plain value under one of alertd's names.
	onlyBuckets := func(e element) error {
		if !e.bucket {
			return fmt.Errorf("the root bucket holds %q, which is not a bucket", clip(e.key))
		}
		return nil
	}
	_, err = c.walk(p, nil, nil, 0, onlyBuckets)
	return err
}

// walk checks the subtree under p, as bbolt's tx.Check does: every key in
// [lo, hi) and after the one before it, every nested bucket sound. visit,
// when set, sees every leaf element first. It returns the subtree's
// greatest key (nil for an empty leaf), as tx.Check's key-order test
// carries it to the next sibling.
func (c *checker) walk(p page, lo, hi []byte, depth int, visit func(element) error) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%s: the tree is more than %d levels deep", p, maxDepth)
	}
	// bbolt removes a page left with no keys, but for a bucket's root
	// leaf (the one page with no key leading to it, lo); an empty page
	// elsewhere makes a cursor lose its way back.
	if p.count == 0 && (p.flags == flagBranch || lo != nil) {
		return nil, fmt.Errorf("%s has no keys", p)
	}
	prev := lo
	var last []byte
	for i := range int(p.count) {
		e, err := p.element(i)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if err := keyOrder(i, e.key, prev, hi); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if p.flags == flagLeaf {
			if visit != nil {
				if err := visit(e); err != nil {
					return nil, err
				}
			}
			if e.bucket {
				if err := c.bucket(e.key, e.value, depth); err != nil {
					return nil, err
				}
			}
			prev, last = e.key, e.key
			continue
		}
		next := hi
		if i+1 < int(p.count) {
			n, err := p.element(i + 1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			next = n.key
		}
		child, err := c.page(e.child)
		if err != nil {
			return nil, err
		}
		if last, err = c.walk(child, e.key, next, depth+1, visit); err != nil {
			return nil, err
		}
		prev = last
	}
	return last, nil
}

// keyOrder is tx.Check's verifyKeyOrder, made strict where bbolt's writes
// need it: each key is after the one before and before the next key of
// the page above, and the first key of a page is the very key that leads
// to it. tx.Check allows a greater first key, but when bbolt rewrites the
// page it looks for its old first key in the parent, and a parent holding
// another adds a second link beside the stale one: the next commit then
// leaves a freed page in the tree.
func keyOrder(i int, key, prev, hi []byte) error {
	switch {
	case i == 0 && prev != nil && !bytes.Equal(prev, key):
		return fmt.Errorf("its first key %q is not the key that leads to it", clip(key))
	case i > 0 && bytes.Compare(prev, key) >= 0:
		return fmt.Errorf("key %q is not after the key before it", clip(key))
	case hi != nil && bytes.Compare(key, hi) >= 0:
		return fmt.Errorf("key %q is not before the next key of the page above", clip(key))
	}
	return nil
}

// bucket checks a nested bucket: its header, then its own tree or the
// page inline in its value.
func (c *checker) bucket(name, value []byte, depth int) error {
	if len(value) < bucketHeaderSize {
		return fmt.Errorf("bucket %s: its header is cut short", printable(name))
	}
	if root := order.Uint64(value); root != 0 {
		p, err := c.page(root)
		if err == nil {
			_, err = c.walk(p, nil, nil, depth+1, nil)
		}
		if err != nil {
			return fmt.Errorf("bucket %s: %w", printable(name), err)
		}
		return nil
	}
	inline := value[bucketHeaderSize:]
	if len(inline) < pageHeaderSize {
		return fmt.Errorf("bucket %s: its inline page is cut short", printable(name))
	}
	p := parsePage(inline)
	p.inline = true
	if p.flags != flagLeaf {
		return fmt.Errorf("bucket %s: its inline page is a %s page, not a leaf", printable(name), typeName(p.flags))
	}
	// bbolt never writes a nested bucket into an inline one, and neither
	// its freelist rebuild nor tx.Check looks inside inline buckets: the
	// pages of such a bucket would be counted free and overwritten.
	noBuckets := func(e element) error {
		if e.bucket {
			return fmt.Errorf("bucket %s: its inline page holds a nested bucket", printable(name))
		}
		return nil
	}
	if _, err := c.walk(p, nil, nil, depth+1, noBuckets); err != nil {
		return fmt.Errorf("bucket %s: %w", printable(name), err)
	}
	return nil
}

// freelist reads the freelist page a meta page names (alertd's store keeps
// none, but a file last written with one has it) and returns its page ids.
func (c *checker) freelist(id uint64) ([]uint64, error) {
	p, err := c.readPage(id, c.pgid)
	if err != nil {
		return nil, fmt.Errorf("freelist: %w", err)
	}
	if p.flags != flagFreelist {
		return nil, fmt.Errorf("freelist page %d is a %s page", id, typeName(p.flags))
	}
	for i := id; i <= id+uint64(p.overflow); i++ {
		c.used.set(i)
	}
	// A count of 0xFFFF means the real count is the first id slot.
	count, first := uint64(p.count), uint64(pageHeaderSize)
	if count == 0xFFFF {
		if len(p.data) < pageHeaderSize+8 {
			return nil, fmt.Errorf("freelist page %d is cut short", id)
		}
		count, first = order.Uint64(p.data[pageHeaderSize:]), pageHeaderSize+8
	}
	if count > (uint64(len(p.data))-first)/8 {
		return nil, fmt.Errorf("freelist page %d lists %d pages, more than it can hold", id, count)
	}
	ids := make([]uint64, count)
	for i := range ids {
		ids[i] = order.Uint64(p.data[first+uint64(i)*8:])
	}
	return ids, nil
}

// freeCoverage is tx.Check's accounting for a written freelist: each page
// below the high-water mark is either in use or free, never both, and free
// at most once.
func (c *checker) freeCoverage(ids []uint64) string {
	free := newBitset(c.pgid)
	slices.Sort(ids)
	for _, id := range ids {
		switch {
		case id < 2 || id >= c.pgid:
			return fmt.Sprintf("the freelist names page %d, outside the %d pages in use", id, c.pgid)
		case free.has(id):
			return fmt.Sprintf("the freelist names page %d twice", id)
		case c.used.has(id):
			return fmt.Sprintf("page %d is both in use and in the freelist", id)
		}
		free.set(id)
	}
	for id := range c.pgid {
		if !c.used.has(id) && !free.has(id) {
			return fmt.Sprintf("page %d is neither in use nor in the freelist", id)
		}
	}
	return ""
}

// printable is a bucket's name as a finding shows it: bare when it is
// plain text, as alertd's are, quoted otherwise.
func printable(name []byte) string {
	for _, c := range name {
		if c <= ' ' || c > '~' || c == '"' {
			return fmt.Sprintf("%q", clip(name))
		}
	}
	return clip(name)
}

// clip keeps a key in a finding short.
func clip(k []byte) string {
	if len(k) > 40 {
		return string(k[:40]) + "…"
	}
	return string(k)
}
