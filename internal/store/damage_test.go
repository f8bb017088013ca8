package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// These tests damage copies of a real store, made by alertd's own Open and
// written like alertd writes it, and hold the check to its promise: a file
// it passes is one bbolt opens, reads, checks and writes without a panic,
// a fault or an error (tried in a child process, since a panic in one of
// bbolt's goroutines cannot be recovered); a file it fails is moved aside
// intact and replaced by a sound store holding what could be read.

// original is the store every case damages, with what it holds.
type original struct {
	image    []byte
	pageSize int
	pgid     uint64                       // pages in use
	kinds    map[uint64]string            // page → "branch", "leaf", "free", "overflow" or "meta"
	data     map[string]map[string][]byte // bucket → key → value
}

var pristine *original

// makeOriginal builds the store once: enough outbox mail, dead letters,
// alert and dedupe state for branch pages, overflow values, inline buckets
// and free pages (mail delivered since).
func makeOriginal(t *testing.T) *original {
	t.Helper()
	if pristine != nil {
		return pristine
	}
	path := filepath.Join(t.TempDir(), "alertd.db")
	// alertd's options but the array freelist, whose allocations (unlike
	// the map's) do not depend on map order: the same pages every run, so
	// a failing case can be run again.
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistArrayType})
	if err != nil {
		t.Fatal(err)
	}
	if err := initBuckets(db); err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	mail := func(b *bolt.Bucket, what string, size int) error {
		id, err := b.NextSequence()
		if err != nil {
			return err
		}
		v := fmt.Appendf(nil, `{"id":%d,"subject":"%s %d","message":"`, id, what, id)
		v = append(v, bytes.Repeat([]byte("x"), size)...)
		return b.Put(binary.BigEndian.AppendUint64(nil, id), append(v, `"}`...))
	}
	// One bucket per transaction: bbolt spills the buckets of a commit in
	// map order, and the layout would change from run to run.
	update := func(name []byte, fn func(b *bolt.Bucket) error) {
		t.Helper()
		if err := db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket(name)) }); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 6 {
		update(BucketOutbox, func(b *bolt.Bucket) error {
			for i := range 30 {
				size := 300 + rnd.IntN(2500)
				if i == 7 {
					size = 12000 // an overflow value
				}
				if err := mail(b, "outbox mail", size); err != nil {
					return err
				}
			}
			return nil
		})
		update(BucketDead, func(b *bolt.Bucket) error { return mail(b, "dead mail", 400) })
		for _, name := range [][]byte{BucketSeries, BucketAlerts} {
			update(name, func(b *bolt.Bucket) error {
				for i := range 100 {
					k := fmt.Appendf(nil, "rule-%d\x00sensors/dev-%d/telemetry", i%7, round*100+i)
					if err := b.Put(k, fmt.Appendf(nil, `{"state":"firing","value":"%d"}`, i)); err != nil {
						return err
					}
				}
				return nil
			})
		}
		update(BucketGroups, func(b *bolt.Bucket) error {
			seq, _ := b.NextSequence()
			return b.Put(fmt.Appendf(nil, "rule-1\x00%020d", seq), []byte(`{"series":"s"}`))
		})
		update(BucketSilences, func(b *bolt.Bucket) error {
			seq, _ := b.NextSequence()
			return b.Put(binary.BigEndian.AppendUint64(nil, seq), []byte(`{"rule":"rule-1"}`))
		})
		update(BucketRules, func(b *bolt.Bucket) error {
			return b.Put(fmt.Appendf(nil, "rule-%d", round), []byte{1, 2, 3})
		})
		// Deliver some: their pages are freed.
		update(BucketOutbox, func(b *bolt.Bucket) error {
			c := b.Cursor()
			n := 0
			for k, _ := c.First(); k != nil && n < 12; k, _ = c.Next() {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
			return nil
		})
	}
	o := &original{kinds: map[uint64]string{}, data: map[string]map[string][]byte{}}
	if err := db.View(func(tx *bolt.Tx) error {
		o.pageSize, o.pgid = db.Info().PageSize, uint64(tx.Size())/uint64(db.Info().PageSize)
		for id := 0; ; id++ {
			p, err := tx.Page(id)
			if err != nil {
				return err
			}
			if p == nil {
				o.pgid = uint64(id)
				break
			}
			o.kinds[uint64(id)] = p.Type
			if p.Type == "branch" || p.Type == "leaf" {
				for i := 1; i <= p.OverflowCount; i++ {
					o.kinds[uint64(id+i)] = "overflow"
				}
				id += p.OverflowCount
			}
		}
		o.data = contents(tx)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if o.image, err = os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"branch", "leaf", "free", "overflow"} {
		if len(o.pages(kind)) == 0 {
			t.Fatalf("the original store has no %s page: %v", kind, o.kinds)
		}
	}
	pristine = o
	return o
}

// contents copies every key and value of alertd's buckets.
func contents(tx *bolt.Tx) map[string]map[string][]byte {
	out := map[string]map[string][]byte{}
	for _, name := range salvaged {
		m := map[string][]byte{}
		_ = tx.Bucket(name).ForEach(func(k, v []byte) error {
			m[string(k)] = bytes.Clone(v)
			return nil
		})
		out[string(name)] = m
	}
	return out
}

func (o *original) pages(kind string) []uint64 {
	var ids []uint64
	for id := range o.pgid {
		if o.kinds[id] == kind {
			ids = append(ids, id)
		}
	}
	return ids
}

// pagesHolding returns the leaf pages whose bytes contain s.
func (o *original) pagesHolding(s string) []uint64 {
	var ids []uint64
	for _, id := range o.pages("leaf") {
		off := int(id) * o.pageSize
		if bytes.Contains(o.image[off:off+o.pageSize], []byte(s)) {
			ids = append(ids, id)
		}
	}
	return ids
}

// damage is one way of damaging a copy of the original.
type damage struct {
	name string
	do   func(o *original, img []byte, rnd *rand.Rand) []byte
	// want is "damaged", "ok", or "" when either verdict is right (bbolt
	// may or may not depend on the bytes hit).
	want string
	// salvaged, for a damaged file, is the least that must be copied.
	salvaged map[string]int
}

func truncate(frac float64) func(*original, []byte, *rand.Rand) []byte {
	return func(o *original, img []byte, _ *rand.Rand) []byte {
		return img[:int(float64(int(o.pgid)*o.pageSize)*frac)]
	}
}

func truncateTo(n func(ps int) int) func(*original, []byte, *rand.Rand) []byte {
	return func(o *original, img []byte, _ *rand.Rand) []byte { return img[:n(o.pageSize)] }
}

// fill overwrites whole pages with zeros, or random bytes when rnd is used.
func fill(kind string, n int, random bool) func(*original, []byte, *rand.Rand) []byte {
	return func(o *original, img []byte, rnd *rand.Rand) []byte {
		ids := o.pages(kind)
		if strings.HasPrefix(kind, "holding:") {
			ids = o.pagesHolding(strings.TrimPrefix(kind, "holding:"))
		}
		if kind == "meta0" || kind == "meta1" {
			ids = []uint64{uint64(kind[4] - '0')}
		}
		for i := 0; i < n && i < len(ids); i++ {
			id := ids[(i*7)%len(ids)]
			page := img[int(id)*o.pageSize : int(id+1)*o.pageSize]
			for j := range page {
				page[j] = 0
				if random {
					page[j] = byte(rnd.Uint32())
				}
			}
		}
		return img
	}
}

// all, as the least salvaged from a bucket, is every entry it held.
const all = -1

// allBut asks for every entry of every bucket but n of bucket.
func allBut(bucket string, n int) map[string]int {
	m := map[string]int{}
	for _, b := range salvaged {
		m[string(b)] = all
	}
	m[bucket] = n
	return m
}

func namedDamage() []damage {
	ps := func(f func(ps int) int) func(*original, []byte, *rand.Rand) []byte { return truncateTo(f) }
	return []damage{
		{name: "cut to half", do: truncate(0.5), want: "damaged"},
		{name: "cut to nine tenths", do: truncate(0.9), want: "damaged", salvaged: map[string]int{"outbox": 1}},
		{name: "cut mid-page", do: truncate(0.7013), want: "damaged"},
		{name: "cut to one page", do: ps(func(ps int) int { return ps }), want: "damaged"},
		{name: "cut to a page and a half", do: ps(func(ps int) int { return ps + ps/2 }), want: "damaged"},
		{name: "cut to 100 bytes", do: ps(func(int) int { return 100 }), want: "damaged"},
		{name: "empty", do: ps(func(int) int { return 0 }), want: "damaged"},
		// Three pages hold a handful of mails; the rest of the outbox and
		// every other bucket come through.
		{name: "zeros over three outbox leaves", do: fill("holding:outbox mail", 3, false), want: "damaged", salvaged: allBut("outbox", 90)},
		{name: "random bytes over three outbox leaves", do: fill("holding:outbox mail", 3, true), want: "damaged", salvaged: allBut("outbox", 90)},
		// The first leaf is the root bucket's: without it no bucket can be
		// found, and nothing is salvaged.
		{name: "zeros over three leaves, the root bucket's among them", do: fill("leaf", 3, false), want: "damaged"},
		{name: "zeros over a branch page", do: fill("branch", 1, false), want: "damaged", salvaged: map[string]int{"rules": all, "silences": all}},
		{name: "random bytes over a branch page", do: fill("branch", 1, true), want: "damaged", salvaged: map[string]int{"rules": all, "silences": all}},
		{name: "zeros over an overflow page", do: fill("overflow", 1, false), want: "ok"},
		{name: "random bytes over free pages", do: fill("free", 5, true), want: "ok"},
		{name: "zeros over meta page 0", do: fill("meta0", 1, false), want: ""},
		{name: "random bytes over meta page 1", do: fill("meta1", 1, true), want: ""},
		{name: "zeros over both meta pages", do: func(o *original, img []byte, rnd *rand.Rand) []byte {
			return fill("meta1", 1, false)(o, fill("meta0", 1, false)(o, img, rnd), rnd)
		}, want: "damaged"},
		{name: "a page that says it is page 0", do: func(o *original, img []byte, _ *rand.Rand) []byte {
			id := o.pagesHolding("outbox mail")[1]
			clear(img[int(id)*o.pageSize : int(id)*o.pageSize+8])
			return img
		}, want: "damaged"},
		{name: "a stale copy of another page", do: func(o *original, img []byte, _ *rand.Rand) []byte {
			leaves := o.pages("leaf")
			a, b := leaves[0], leaves[len(leaves)-1]
			copy(img[int(b)*o.pageSize:int(b+1)*o.pageSize], img[int(a)*o.pageSize:int(a+1)*o.pageSize])
			return img
		}, want: "damaged"},
	}
}

func TestDamagedCopiesOfARealStore(t *testing.T) {
	o := makeOriginal(t)
	h := newHarness(t, o)
	if f := h.verdict(o.image); f != "" {
		t.Fatalf("the undamaged store fails the check: %s", f)
	}
	h.run("undamaged", o.image, "ok", nil)
	rnd := rand.New(rand.NewPCG(3, 4))
	for _, d := range namedDamage() {
		h.run(d.name, d.do(o, bytes.Clone(o.image), rnd), d.want, d.salvaged)
	}
	n, seed := scribbleCount(t)
	rnd = rand.New(rand.NewPCG(seed, 5))
	for i := range n {
		img, what := scribble(o, bytes.Clone(o.image), rnd)
		h.run(fmt.Sprintf("scribble %d (%s)", i, what), img, "", nil)
	}
	h.finish()
}

// scribbleCount is how many random scribbles to try: 200, or the count in
// ALERTD_SCRIBBLES for a longer run (and ALERTD_SCRIBBLE_SEED to vary them).
func scribbleCount(t *testing.T) (int, uint64) {
	n, seed := 200, uint64(1)
	if s := os.Getenv("ALERTD_SCRIBBLES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatalf("ALERTD_SCRIBBLES=%q", s)
		}
	}
	if s := os.Getenv("ALERTD_SCRIBBLE_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("ALERTD_SCRIBBLE_SEED=%q", s)
		}
	}
	return n, seed
}

// scribble damages img one to three times, each a run of zeros, random
// bytes, a flipped bit or a stale page, most often on a page in use, and
// says what it did.
func scribble(o *original, img []byte, rnd *rand.Rand) ([]byte, string) {
	var what []string
	used := append(o.pages("branch"), o.pages("leaf")...)
	used = append(used, o.pages("overflow")...)
	for range 1 + rnd.IntN(3) {
		var id uint64
		switch r := rnd.IntN(10); {
		case r < 6:
			id = used[rnd.IntN(len(used))]
		case r < 7:
			id = uint64(rnd.IntN(2))
		default:
			id = uint64(rnd.IntN(int(o.pgid)))
		}
		page := img[int(id)*o.pageSize : int(id+1)*o.pageSize]
		off := rnd.IntN(o.pageSize)
		if rnd.IntN(3) == 0 {
			off = rnd.IntN(64) // the header and the first elements
		}
		n := min(1+rnd.IntN(o.pageSize/4), o.pageSize-off)
		switch rnd.IntN(4) {
		case 0:
			clear(page[off : off+n])
			what = append(what, fmt.Sprintf("zeros %s page %d [%d:+%d]", o.kinds[id], id, off, n))
		case 1:
			for i := off; i < off+n; i++ {
				page[i] = byte(rnd.Uint32())
			}
			what = append(what, fmt.Sprintf("random %s page %d [%d:+%d]", o.kinds[id], id, off, n))
		case 2:
			page[off] ^= 1 << rnd.IntN(8)
			what = append(what, fmt.Sprintf("bit flip %s page %d [%d]", o.kinds[id], id, off))
		default:
			from := used[rnd.IntN(len(used))]
			copy(page, o.image[int(from)*o.pageSize:int(from+1)*o.pageSize])
			what = append(what, fmt.Sprintf("%s page %d over %s page %d", o.kinds[from], from, o.kinds[id], id))
		}
	}
	return img, strings.Join(what, ", ")
}

// verdict is the check's finding on img ("" when it passes).
func (h *harness) verdict(img []byte) string {
	finding, err := checkFile(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		h.t.Fatalf("check: %v", err)
	}
	return finding
}

// openDamaged opens a file the check failed with Open, as alertd does,
// and checks what Open promises: the file moved aside byte for byte, a
// sound fresh store, and in it exactly the entries the Recovery counts.
func (h *harness) openDamaged(name, path string, img []byte, finding string, least map[string]int) {
	t := h.t
	db, rec, err := Open(path)
	if err != nil {
		t.Errorf("%s: open: %v", name, err)
		return
	}
	defer db.Close()
	if rec == nil || rec.Finding != finding {
		t.Errorf("%s: recovery %+v, want the finding %q", name, rec, finding)
		return
	}
	if kept, err := os.ReadFile(rec.MovedTo); err != nil || !bytes.Equal(kept, img) {
		t.Errorf("%s: the damaged file was not kept intact at %s (%v)", name, rec.MovedTo, err)
	}
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		got := contents(tx)
		for _, b := range salvaged {
			if n := len(got[string(b)]); n != rec.Salvaged.Copied[string(b)] {
				t.Errorf("%s: bucket %s holds %d entries, the recovery says %d were copied", name, b, n, rec.Salvaged.Copied[string(b)])
			}
			want := least[string(b)]
			if want == all {
				want = len(h.o.data[string(b)])
			}
			if n := rec.Salvaged.Copied[string(b)]; n < want {
				t.Errorf("%s: %d entries of %s salvaged, want at least %d (%+v)", name, n, b, want, rec.Salvaged)
			}
		}
		h.checkSequences(name, tx)
		for k, v := range got["outbox"] {
			if bytes.Equal(h.o.data["outbox"][k], v) {
				h.intactMail++
			}
		}
		return nil
	}); err != nil {
		t.Errorf("%s: the fresh store: %v", name, err)
	}
	h.salvagedTotal += rec.Salvaged.Total()
}

// checkSequences: a new outbox id, silence id or group item never takes
// the key of a salvaged one.
func (h *harness) checkSequences(name string, tx *bolt.Tx) {
	floor := func(bucket []byte) uint64 {
		var n uint64
		_ = tx.Bucket(bucket).ForEach(func(k, _ []byte) error {
			if s, ok := sequenceOf(bucket, k); ok {
				n = max(n, s)
			}
			return nil
		})
		return n
	}
	for _, c := range []struct {
		bucket []byte
		least  uint64
	}{
		{BucketOutbox, max(floor(BucketOutbox), floor(BucketDead))},
		{BucketSilences, floor(BucketSilences)},
		{BucketGroups, floor(BucketGroups)},
	} {
		if got := tx.Bucket(c.bucket).Sequence(); got < c.least {
			h.t.Errorf("%s: bucket %s's sequence is %d, below its salvaged key %d", name, c.bucket, got, c.least)
		}
	}
}
