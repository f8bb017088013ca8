package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// childEnv names the file of paths a child process is to try with bbolt.
const childEnv = "ALERTD_BBOLT_CHILD"

// harness runs the damage cases: files the check passes are collected and
// tried with bbolt in child processes at the end; files it fails are
// opened with Open at once.
type harness struct {
	t          *testing.T
	o          *original
	dir        string
	passed     []string          // paths of files the check passed
	names      map[string]string // path → case name
	cases      int
	flagged    int
	intactMail int // salvaged outbox entries identical to the original
	// salvagedTotal counts the entries salvaged over all damaged cases.
	salvagedTotal int
	// flaggedPaths keeps copies of the files the check failed, for
	// ALERTD_CLASSIFY=1 to try them with bbolt too: how many of them bbolt
	// would indeed have crashed on, or refused.
	flaggedPaths []string
	verdictOf    map[string]string
}

func newHarness(t *testing.T, o *original) *harness {
	return &harness{t: t, o: o, dir: t.TempDir(), names: map[string]string{}, verdictOf: map[string]string{}}
}

// run checks img, a damaged copy; want is "ok", "damaged" or "" (either).
func (h *harness) run(name string, img []byte, want string, least map[string]int) {
	h.cases++
	dir := filepath.Join(h.dir, fmt.Sprint(h.cases))
	if err := os.Mkdir(dir, 0o700); err != nil {
		h.t.Fatal(err)
	}
	path := filepath.Join(dir, "alertd.db")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		h.t.Fatal(err)
	}
	finding := h.verdict(img)
	switch {
	case finding == "" && want == "damaged":
		h.t.Errorf("%s: the check passed a damaged file", name)
	case finding != "" && want == "ok":
		h.t.Errorf("%s: the check failed a sound file: %s", name, finding)
	}
	if finding == "" {
		h.passed = append(h.passed, path)
		h.names[path] = name
		return
	}
	h.flagged++
	if os.Getenv("ALERTD_CLASSIFY") != "" {
		keep := filepath.Join(dir, "flagged.db")
		if err := os.WriteFile(keep, img, 0o600); err != nil {
			h.t.Fatal(err)
		}
		h.flaggedPaths = append(h.flaggedPaths, keep)
		h.names[keep], h.verdictOf[keep] = name, finding
	}
	h.openDamaged(name, path, img, finding, least)
}

// finish tries every passed file with bbolt in child processes and logs
// the tally.
func (h *harness) finish() {
	t := h.t
	failures := tryWithBbolt(t, h.passed)
	for path, why := range failures {
		t.Errorf("%s: the check passed it, but bbolt %s", h.names[path], why)
	}
	t.Logf("%d cases: %d failed the check and were moved aside (%d entries salvaged, %d of them outbox mail byte for byte), %d passed and were opened, read, checked and rewritten by bbolt in a child process: %d failures",
		h.cases, h.flagged, h.salvagedTotal, h.intactMail, len(h.passed), len(failures))
	if len(h.flaggedPaths) == 0 {
		return
	}
	crashed := 0
	flaggedFailures := tryWithBbolt(t, h.flaggedPaths)
	for _, why := range flaggedFailures {
		if strings.HasPrefix(why, "crashed") {
			crashed++
		}
	}
	t.Logf("of the %d files the check failed, bbolt crashed on %d, reported an error on %d and took %d without a complaint",
		len(h.flaggedPaths), crashed, len(flaggedFailures)-crashed, len(h.flaggedPaths)-len(flaggedFailures))
	for _, path := range h.flaggedPaths {
		if _, failed := flaggedFailures[path]; !failed {
			t.Logf("  bbolt took without a complaint: %s: %s", h.names[path], h.verdictOf[path])
		}
	}
}

// tryWithBbolt runs the paths through bbolt in child processes, starting
// a new child after one dies, and returns what went wrong for each path
// that failed.
func tryWithBbolt(t *testing.T, paths []string) map[string]string {
	failures := map[string]string{}
	for len(paths) > 0 {
		done, failed, why := runChild(t, paths)
		if failed != "" {
			failures[failed] = why
		}
		paths = paths[done:]
	}
	return failures
}

// childStall is how long a child may spend on one file: bbolt walking a
// loop in a damaged tree never returns, and that too is a failure.
const childStall = 20 * time.Second

// runChild tries paths in one child and returns how many it got through
// (counting the one that failed, if any).
func runChild(t *testing.T, paths []string) (done int, failed, why string) {
	list := filepath.Join(t.TempDir(), "paths")
	if err := os.WriteFile(list, []byte(strings.Join(paths, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBboltChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+list)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	current, hung := "", false
	stall := time.NewTimer(childStall)
	defer stall.Stop()
read:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				break read
			}
			stall.Reset(childStall)
			verb, rest, _ := strings.Cut(line, " ")
			switch verb {
			case "start":
				current = rest
			case "ok":
				done, current = done+1, ""
			case "error":
				path, msg, _ := strings.Cut(rest, "\t")
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				return done + 1, path, "reported: " + msg
			}
		case <-stall.C:
			hung = true
			_ = cmd.Process.Kill()
			for range lines {
			}
			break read
		}
	}
	err = cmd.Wait()
	switch {
	case hung && current != "":
		return done + 1, current, fmt.Sprintf("crashed: still busy after %v", childStall)
	case current != "":
		tail := stderr.String()
		if i := strings.Index(tail, "panic:"); i >= 0 {
			tail = tail[i:]
		}
		if i := strings.Index(tail, "fatal error:"); i >= 0 {
			tail = tail[i:]
		}
		return done + 1, current, fmt.Sprintf("crashed (%v): %.300s", err, tail)
	case err != nil || done < len(paths):
		t.Fatalf("bbolt child: %v after %d of %d files\n%s", err, done, len(paths), stderr.String())
	}
	return done, "", ""
}

// TestBboltChild is the child: it is skipped unless run by runChild.
func TestBboltChild(t *testing.T) {
	list := os.Getenv(childEnv)
	if list == "" {
		t.Skip("run by TestDamagedCopiesOfARealStore in a child process")
	}
	data, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range strings.Split(string(data), "\n") {
		fmt.Printf("start %s\n", path)
		if err := exercise(path); err != nil {
			fmt.Printf("error %s\t%s\n", path, strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		fmt.Printf("ok %s\n", path)
	}
}

// exercise does to the file what alertd does and more, with bbolt alone:
// open as alertd does (which rebuilds the freelist), read every key both
// ways and by lookup, tx.Check, create alertd's buckets, rewrite every
// entry (so each page is read into nodes, spilled and freed), check again,
// reopen and check once more, and last run alertd's own check on the
// file bbolt wrote.
func exercise(path string) error {
	opts := &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType}
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	if err := db.View(func(tx *bolt.Tx) error { return readAll(tx) }); err != nil {
		db.Close()
		return err
	}
	if err := db.View(checkTx); err != nil {
		db.Close()
		return err
	}
	if err := db.Update(rewrite); err != nil {
		db.Close()
		return fmt.Errorf("rewrite: %w", err)
	}
	if err := db.View(checkTx); err != nil {
		db.Close()
		return fmt.Errorf("after the rewrite: %w", err)
	}
	if err := db.Close(); err != nil {
		return err
	}
	if db, err = bolt.Open(path, 0o600, opts); err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	err = db.View(checkTx)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// What bbolt wrote, alertd's check passes: it asks no more than bbolt
	// keeps.
	img, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if finding, err := checkFile(bytes.NewReader(img), int64(len(img))); finding != "" || err != nil {
		return fmt.Errorf("the check fails the file bbolt rewrote: %s %v", finding, err)
	}
	return nil
}

func checkTx(tx *bolt.Tx) error {
	var errs []error
	for err := range tx.Check() {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func readAll(tx *bolt.Tx) error {
	return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		if b == nil {
			return fmt.Errorf("root key %q is not a bucket", name)
		}
		return readBucket(b)
	})
}

func readBucket(b *bolt.Bucket) error {
	c := b.Cursor()
	n := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		n++
		if v == nil {
			if child := b.Bucket(k); child != nil {
				if err := readBucket(child); err != nil {
					return err
				}
				continue
			}
		}
		if got := b.Get(k); !bytes.Equal(got, v) {
			return fmt.Errorf("key %q: Get finds %d bytes, the cursor %d", k, len(got), len(v))
		}
	}
	for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
		n--
	}
	if n != 0 {
		return fmt.Errorf("reading forwards and backwards differ by %d keys", n)
	}
	return nil
}

func rewrite(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	if _, err := tx.Bucket(BucketOutbox).NextSequence(); err != nil {
		return err
	}
	return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return rewriteBucket(b) })
}

func rewriteBucket(b *bolt.Bucket) error {
	type kv struct{ k, v []byte }
	var all []kv
	var nested [][]byte
	if err := b.ForEach(func(k, v []byte) error {
		if v == nil && b.Bucket(k) != nil {
			nested = append(nested, k)
			return nil
		}
		all = append(all, kv{bytes.Clone(k), bytes.Clone(v)})
		return nil
	}); err != nil {
		return err
	}
	for _, e := range all {
		if err := b.Put(e.k, append(e.v, 'x')); err != nil {
			return err
		}
	}
	for i, e := range all {
		if i%3 == 0 {
			if err := b.Delete(e.k); err != nil {
				return err
			}
		}
	}
	for _, k := range nested {
		if err := rewriteBucket(b.Bucket(k)); err != nil {
			return err
		}
	}
	return nil
}
