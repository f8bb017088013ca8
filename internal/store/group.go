package store

import (
	"errors"
	"fmt"
	"sync"
)

// maxGroup is the most transactions one commit carries (bbolt's own
// batch limit).
const maxGroup = 1000

// group is the store's group commit. The writer that finds no commit
// running commits at once, alone: a lone device or reading does not wait
// for company that is not coming (bbolt's Batch always waited
// MaxBatchDelay first, 2 ms per commit for a single SMTP client). Writers
// that arrive while a commit and its fsync run queue up, and the first of
// them leads the next commit with all of them. Under load the group is
// as large as the arrivals during one fsync; idle, nobody waits.
type group struct {
	mu      sync.Mutex
	queue   []*call
	running bool
}

type call struct {
	fn       func(*Tx) error
	err      chan error // buffered: errLead, errTrySolo or the commit's result
	answered bool       // the leader sent this call its result (leader only)
}

var (
	// errLead tells a queued writer that it leads the next commit.
	errLead = errors.New("store: lead the next commit")
	// errTrySolo tells a writer that its function failed inside a group:
	// the others went on without it, and it runs alone to get its error.
	errTrySolo = errors.New("store: run alone")
	// errGroupFull rolls back a group's transaction whose write set grew
	// past what one replica commit carries.
	errGroupFull = errors.New("store: group too large for one replica commit")
)

// Batch is Update shared with concurrent callers: one commit (one fsync)
// for the transactions of every writer that arrived while the previous
// commit ran. fn may run more than once (a group is retried without a
// member that failed), so it must depend only on its arguments and
// assign its results afresh each time. A fn that fails or panics is run
// again alone, in Update, and its error (or panic) is the caller's. In a
// replicated store a group is committed in parts of at most
// MaxReplicaWrites writes, each a transaction of its own; an error of the
// replica is the error of every member of its part.
func (d *DB) Batch(fn func(*Tx) error) error {
	c := &call{fn: fn, err: make(chan error, 1)}
	g := &d.group
	g.mu.Lock()
	g.queue = append(g.queue, c)
	lead := !g.running
	g.running = true
	g.mu.Unlock()
	if lead {
		d.commitGroup()
	}
	for {
		switch err := <-c.err; err {
		case errLead:
			d.commitGroup()
		case errTrySolo:
			return d.Update(fn)
		default:
			return err
		}
	}
}

// commitGroup commits the queued writers (at most maxGroup) in one
// transaction, then hands the lead to the first writer still queued, or
// ends the run when none is.
func (d *DB) commitGroup() {
	g := &d.group
	g.mu.Lock()
	n := min(len(g.queue), maxGroup)
	calls := make([]*call, n)
	copy(calls, g.queue)
	left := len(g.queue)
	g.queue = append(g.queue[:0], g.queue[n:]...)
	clear(g.queue[len(g.queue):left]) // no call (and its closure) kept alive by the array
	g.mu.Unlock()

	defer func() {
		// A panic outside the writers' functions (bbolt's commit, an
		// OnCommit hook): answer the group, pass the lead on, and let
		// the panic go on. Without this the group and every later
		// writer would wait forever on a store that writes nothing.
		if p := recover(); p != nil {
			for _, c := range calls {
				if !c.answered { // runGroup may have left a call twice in calls
					c.answered = true
					c.err <- fmt.Errorf("store: commit panicked: %v", p)
				}
			}
			d.passLead()
			panic(p)
		}
	}()
	d.runGroup(calls)
	d.passLead()
}

// passLead hands the lead to the first writer still queued, or ends the
// run when none is.
func (d *DB) passLead() {
	g := &d.group
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.running = false
		g.mu.Unlock()
		return
	}
	next := g.queue[0]
	g.mu.Unlock()
	next.err <- errLead
}

// runGroup runs calls in one read-write transaction, or in a replicated
// store in as few as keep each write set within MaxReplicaWrites: the
// transaction that goes over is rolled back and the members before the
// one that went over are committed without it, the rest after them. A
// member whose fn fails is taken out and told to run alone; the rest are
// retried.
func (d *DB) runGroup(calls []*call) {
	n := len(calls) // the members the next transaction takes
	for len(calls) > 0 {
		failed, full := -1, false
		err := d.Update(func(t *Tx) error {
			for i, c := range calls[:n] {
				if err := safely(c.fn, t); err != nil {
					failed = i
					return err
				}
				if i > 0 && t.w.full() {
					full, n = true, i
					return errGroupFull
				}
			}
			return nil
		})
		switch {
		case failed >= 0:
			calls[failed].answered = true
			calls[failed].err <- errTrySolo
			calls = append(calls[:failed], calls[failed+1:]...)
			if n--; n == 0 {
				n = len(calls)
			}
		case full:
			// Retried with the members that fit.
		default:
			for _, c := range calls[:n] {
				c.answered = true
				c.err <- err
			}
			calls = calls[n:]
			n = len(calls)
		}
	}
}

// safely runs fn, turning a panic into an error so that one writer's
// panic does not take the group (and its leader's goroutine) down; the
// writer's solo run panics again in its own goroutine.
func safely(fn func(*Tx) error, tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: transaction panicked: %v", p)
		}
	}()
	return fn(tx)
}
