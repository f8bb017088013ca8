package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
)

// The bbolt file format (go.etcd.io/bbolt v1.5.0, internal/common), read
// with ReadAt and a bounds check before every slice. bbolt itself maps the
// file and trusts each offset and page number it finds there, so on a
// damaged file it panics (often in a goroutine of its own, out of reach of
// recover) or faults on a page past the end of a short file. Reading the
// file this way first is what lets alertd describe damage instead.
const (
	pageHeaderSize   = 16 // id u64, flags u16, count u16, overflow u32
	elementSize      = 16 // leaf: flags, pos, ksize, vsize u32; branch: pos, ksize u32, pgid u64
	bucketHeaderSize = 16 // root pgid u64, sequence u64 (then the page of an inline bucket)
	metaSize         = 64 // magic, version, page size, flags, root bucket, freelist, pgid, txid, checksum

	boltMagic   uint32 = 0xED0CDAED
	boltVersion uint32 = 2
	noFreelist         = ^uint64(0)

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagMeta     = 0x04
	flagFreelist = 0x10

	bucketLeafFlag = 0x01

	// bbolt looks for the second meta page at 1 KiB to 16 MiB; a page
	// size outside that range is not one bbolt could have written.
	minPageSize = 1 << 10
	maxPageSize = 1 << 24

	// A B+tree whose branch pages hold at least two keys stays far below
	// this depth for any file that fits on a disk; deeper means a loop or
	// garbage, and the bound keeps the recursion's stack small.
	maxDepth = 64
)

// bbolt writes its structures in the machine's byte order.
var order = binary.NativeEndian

// meta is the part of a meta page that decides how the file is read.
type meta struct {
	pageSize uint32
	root     uint64 // page of the root bucket
	freelist uint64 // page of the freelist, or noFreelist
	pgid     uint64 // high-water mark: every page in use is below it
	txid     uint64
}

// parseMeta decodes the meta page at the start of b, or says why it is not
// a valid one, with bbolt's own tests (magic, version, checksum).
func parseMeta(b []byte) (meta, error) {
	if len(b) < pageHeaderSize+metaSize {
		return meta{}, errors.New("cut short")
	}
	m := b[pageHeaderSize : pageHeaderSize+metaSize]
	switch {
	case order.Uint32(m[0:]) != boltMagic:
		return meta{}, errors.New("not a bbolt meta page")
	case order.Uint32(m[4:]) != boltVersion:
		return meta{}, fmt.Errorf("format version %d, not %d", order.Uint32(m[4:]), boltVersion)
	}
	h := fnv.New64a()
	_, _ = h.Write(m[:56])
	if h.Sum64() != order.Uint64(m[56:]) {
		return meta{}, errors.New("checksum mismatch")
	}
	return meta{
		pageSize: order.Uint32(m[8:]),
		root:     order.Uint64(m[16:]),
		freelist: order.Uint64(m[32:]),
		pgid:     order.Uint64(m[40:]),
		txid:     order.Uint64(m[48:]),
	}, nil
}

// page is a page read from the file (with its overflow pages), or the
// page embedded in an inline bucket's value.
type page struct {
	id       uint64
	flags    uint16
	count    uint16
	overflow uint32
	data     []byte
	inline   bool
}

func (p page) String() string {
	if p.inline {
		return "the inline page"
	}
	return fmt.Sprintf("page %d", p.id)
}

func parsePage(b []byte) page {
	return page{
		id:       order.Uint64(b[0:]),
		flags:    order.Uint16(b[8:]),
		count:    order.Uint16(b[10:]),
		overflow: order.Uint32(b[12:]),
		data:     b,
	}
}

func typeName(flags uint16) string {
	switch flags {
	case flagBranch:
		return "branch"
	case flagLeaf:
		return "leaf"
	case flagMeta:
		return "meta"
	case flagFreelist:
		return "freelist"
	}
	return fmt.Sprintf("unknown (flags %#x)", flags)
}

func knownType(flags uint16) bool {
	return flags == flagBranch || flags == flagLeaf || flags == flagMeta || flags == flagFreelist
}

// element is one key of a branch or leaf page.
type element struct {
	bucket bool   // leaf: the value is a nested bucket
	key    []byte // never empty
	value  []byte // leaf only
	child  uint64 // branch only: the page under key
}

// element returns the i-th element of p, every offset checked against the
// page's bytes.
func (p page) element(i int) (element, error) {
	off := pageHeaderSize + i*elementSize
	if off+elementSize > len(p.data) {
		return element{}, fmt.Errorf("element %d lies past the end of the page", i)
	}
	h := p.data[off : off+elementSize]
	var e element
	var pos, ksize, vsize uint64
	if p.flags == flagLeaf {
		e.bucket = order.Uint32(h[0:])&bucketLeafFlag != 0
		pos, ksize, vsize = uint64(order.Uint32(h[4:])), uint64(order.Uint32(h[8:])), uint64(order.Uint32(h[12:]))
	} else {
		pos, ksize = uint64(order.Uint32(h[0:])), uint64(order.Uint32(h[4:]))
		e.child = order.Uint64(h[8:])
	}
	// bbolt counts pos from the element's own header.
	start := uint64(off) + pos
	end := start + ksize + vsize // each term < 2^33: no overflow
	switch {
	case ksize == 0:
		return element{}, fmt.Errorf("element %d has an empty key", i)
	case end > uint64(len(p.data)):
		return element{}, fmt.Errorf("element %d runs past the end of the page", i)
	}
	e.key = p.data[start : start+ksize : start+ksize]
	e.value = p.data[start+ksize : end : end]
	return e, nil
}

// file is a store file read page by page.
type file struct {
	r        io.ReaderAt
	size     int64
	pageSize int
}

// pages is how many whole pages the file holds.
func (f *file) pages() uint64 { return uint64(f.size) / uint64(f.pageSize) }

// readPage reads page id and its overflow pages, all of which must lie
// below limit (and so inside the file, which the caller has made sure
// holds limit pages), and checks that the page says it is page id.
func (f *file) readPage(id, limit uint64) (page, error) {
	if id < 2 {
		return page{}, fmt.Errorf("a reference to meta page %d", id)
	}
	if id >= limit {
		return page{}, fmt.Errorf("a reference to page %d, past the %d pages in use", id, limit)
	}
	ps := uint64(f.pageSize)
	head := make([]byte, pageHeaderSize)
	if _, err := f.r.ReadAt(head, int64(id*ps)); err != nil {
		return page{}, fmt.Errorf("page %d: %w", id, err)
	}
	p := parsePage(head)
	if p.id != id {
		return page{}, fmt.Errorf("page %d says it is page %d", id, p.id)
	}
	if span := uint64(p.overflow) + 1; span > limit-id {
		return page{}, fmt.Errorf("page %d claims %d overflow pages, past the %d pages in use", id, p.overflow, limit)
	}
	buf := make([]byte, (uint64(p.overflow)+1)*ps)
	if _, err := f.r.ReadAt(buf, int64(id*ps)); err != nil {
		return page{}, fmt.Errorf("page %d: %w", id, err)
	}
	return parsePage(buf), nil
}

// readMeta reads the meta page at byte offset off, or says why it is not
// a valid one.
func (f *file) readMeta(off int64) (meta, error) {
	b, err := f.readMetaPage(off)
	if err != nil {
		return meta{}, err
	}
	return parseMeta(b)
}

func (f *file) readMetaPage(off int64) ([]byte, error) {
	n := int64(pageHeaderSize + metaSize)
	if off+n > f.size {
		return nil, errors.New("past the end of the file")
	}
	b := make([]byte, n)
	if _, err := f.r.ReadAt(b, off); err != nil {
		return nil, err
	}
	return b, nil
}

// metas finds the page size as bbolt does (from the first meta page, else
// from the second at each page size bbolt tries) and returns both metas,
// each with the reason it is invalid, if it is.
func (f *file) metas() (m [2]meta, errs [2]error) {
	m[0], errs[0] = f.readMeta(0)
	ps := int64(0)
	if errs[0] == nil {
		ps = int64(m[0].pageSize)
	} else {
		for off := int64(minPageSize); off <= maxPageSize && off < f.size-minPageSize; off <<= 1 {
			if mm, err := f.readMeta(off); err == nil {
				ps = int64(mm.pageSize)
				break
			}
		}
	}
	if ps == 0 {
		errs[1] = errors.New("not found at any page size")
		return m, errs
	}
	f.pageSize = int(ps)
	if ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0 {
		errs[0] = fmt.Errorf("says pages are %d bytes", ps)
		errs[1] = errs[0]
		return m, errs
	}
	m[1], errs[1] = f.readMeta(ps)
	return m, errs
}

// current picks the meta bbolt would use: the valid one with the higher
// transaction id (page 0 on a tie).
func current(m [2]meta, errs [2]error) (meta, int, bool) {
	switch {
	case errs[0] == nil && errs[1] == nil && m[1].txid > m[0].txid:
		return m[1], 1, true
	case errs[0] == nil:
		return m[0], 0, true
	case errs[1] == nil:
		return m[1], 1, true
	}
	return meta{}, -1, false
}

// bitset marks pages.
type bitset []uint64

func newBitset(n uint64) bitset { return make(bitset, (n+63)/64) }

func (b bitset) has(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) set(i uint64)      { b[i/64] |= 1 << (i % 64) }
