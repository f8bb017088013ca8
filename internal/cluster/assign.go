package cluster

import (
	"slices"
)

// The assignment is computed by every instance on its own from the same
// view (the live members and the held leases in the KV bucket), so there is
// no leader and no assignment message. The lease's compare-and-set is the
// only arbiter: two instances that briefly disagree both try, one wins.
//
// It is balanced and sticky: member i of the m sorted live members holds
// n/m partitions, the first n%m one more, so the counts differ by at most
// one; an instance keeps what it holds unless it holds more than its count,
// so a member's death moves only the dead member's partitions, and a new
// member takes partitions only from those over their count.

// target is how many of n partitions self should hold among members.
// A member not (yet) in the list holds none.
func target(n int, members []string, self string) int {
	rank, ok := slices.BinarySearch(members, self)
	if !ok || len(members) == 0 {
		return 0
	}
	t := n / len(members)
	if rank < n%len(members) {
		t++
	}
	return t
}

// preference is self's order over the partitions: starting at its share's
// first partition, so members with different ranks try different free
// partitions first instead of racing for partition 0.
func preference(n int, members []string, self string) []int {
	rank, _ := slices.BinarySearch(members, self)
	start := 0
	if len(members) > 0 {
		start = rank * n / len(members)
	}
	order := make([]int, n)
	for k := range order {
		order[k] = (start + k) % n
	}
	return order
}

// plan says which held partitions self gives up (the ones last in its
// preference) and which free ones it tries to take, in order, taking at
// most want of them. members is sorted.
func plan(n int, members []string, self string, held map[int]bool, free map[int]bool) (release, candidates []int, want int) {
	t := target(n, members, self)
	order := preference(n, members, self)
	excess := len(held) - t
	for k := len(order) - 1; k >= 0 && excess > 0; k-- {
		if p := order[k]; held[p] {
			release = append(release, p)
			excess--
		}
	}
	want = t - len(held)
	if want <= 0 {
		return release, nil, 0
	}
	for _, p := range order {
		if free[p] {
			candidates = append(candidates, p)
		}
	}
	return release, candidates, want
}
