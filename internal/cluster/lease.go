package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A lease is this instance's hold on one partition, for one term. Its term
// is the KV revision of the write that took the partition: revisions are
// the bucket stream's sequence numbers, so a later owner's term is always
// larger. That makes the term a fencing token a store can compare.
type lease struct {
	p    int
	term uint64

	mu       sync.Mutex
	rev      uint64    // the key's latest revision, for the next compare-and-set
	deadline time.Time // trusted until, on this instance's monotonic clock
	lost     bool      // renewal refused or released: never valid again

	// Coordinator-only: the running consumer, if any.
	cancel context.CancelFunc
	done   chan struct{}
}

func newLease(p int, rev uint64, deadline time.Time) *lease {
	return &lease{p: p, term: rev, rev: rev, deadline: deadline}
}

// valid reports whether this instance may still act as the partition's
// owner at now. It can only narrow the window in which a paused owner acts:
// the store's compare-and-set on the term is what fences it.
func (l *lease) valid(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.lost && now.Before(l.deadline)
}

// remaining is how long the lease stays valid after now; 0 once lost.
func (l *lease) remaining(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost {
		return 0
	}
	return max(l.deadline.Sub(now), 0)
}

func (l *lease) revision() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev
}

func (l *lease) renewed(rev uint64, deadline time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rev, l.deadline = rev, deadline
}

func (l *lease) revoke() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lost = true
}

// running reports whether the lease's consumer goroutine is still going.
func (l *lease) running() bool {
	if l.done == nil {
		return false
	}
	select {
	case <-l.done:
		return false
	default:
		return true
	}
}

// The bucket's keys: "member.<instance>" says an instance is alive,
// "lease.<partition>" who owns a partition. Both expire LeaseTTL after
// their last write.
const (
	memberKeyPrefix = "member."
	leaseKeyPrefix  = "lease."
)

func memberKey(instance string) string { return memberKeyPrefix + instance }
func leaseKey(p int) string            { return leaseKeyPrefix + strconv.Itoa(p) }

// leaseValue is a lease key's value. Term is 0 in the write that takes the
// partition (its revision is not known before it is stored) and that
// revision in every renewal.
type leaseValue struct {
	Owner string `json:"owner"`
	Term  uint64 `json:"term,omitempty"`
}

type memberValue struct {
	Started time.Time `json:"started"`
}

// view is what this instance knows of the bucket, kept by its watcher.
type view struct {
	members map[string]bool
	leases  map[int]leaseEntry
}

type leaseEntry struct {
	owner string
	term  uint64
	rev   uint64
}

func newView() view {
	return view{members: map[string]bool{}, leases: map[int]leaseEntry{}}
}

// apply records one watched entry; a delete, a purge or an expiry marker
// removes the key.
func (v *view) apply(e jetstream.KeyValueEntry) {
	live := e.Operation() == jetstream.KeyValuePut
	switch key := e.Key(); {
	case strings.HasPrefix(key, memberKeyPrefix):
		id := strings.TrimPrefix(key, memberKeyPrefix)
		if live {
			v.members[id] = true
		} else {
			delete(v.members, id)
		}
	case strings.HasPrefix(key, leaseKeyPrefix):
		p, err := strconv.Atoi(strings.TrimPrefix(key, leaseKeyPrefix))
		if err != nil {
			return
		}
		var val leaseValue
		if !live || json.Unmarshal(e.Value(), &val) != nil {
			delete(v.leases, p)
			return
		}
		if val.Term == 0 {
			val.Term = e.Revision()
		}
		v.leases[p] = leaseEntry{owner: val.Owner, term: val.Term, rev: e.Revision()}
	}
}

// liveMembers is the sorted member list, with self in it: an instance
// counts itself before its first heartbeat comes back through the watch.
func (v *view) liveMembers(self string) []string {
	out := make([]string, 0, len(v.members)+1)
	for id := range v.members {
		out = append(out, id)
	}
	if !v.members[self] {
		out = append(out, self)
	}
	slices.Sort(out)
	return out
}
