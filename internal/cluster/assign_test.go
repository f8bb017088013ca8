package cluster

import (
	"fmt"
	"slices"
	"testing"
)

// simulate runs the members' plans against a shared lease table until
// nothing changes, as the instances would through the bucket.
func simulate(t *testing.T, n int, members []string, owners map[int]string) map[int]string {
	t.Helper()
	slices.Sort(members)
	for round := 0; round < 10; round++ {
		changed := false
		for _, m := range members {
			held, free := map[int]bool{}, map[int]bool{}
			for p := range n {
				switch owners[p] {
				case m:
					held[p] = true
				case "":
					free[p] = true
				}
			}
			release, candidates, want := plan(n, members, m, held, free)
			for _, p := range release {
				delete(owners, p)
				changed = true
			}
			for _, p := range candidates[:min(want, len(candidates))] {
				owners[p] = m
				changed = true
			}
		}
		if !changed {
			return owners
		}
	}
	t.Fatalf("no convergence: %v", owners)
	return nil
}

func counts(owners map[int]string) map[string]int {
	c := map[string]int{}
	for _, m := range owners {
		c[m]++
	}
	return c
}

func TestPlanBalancedWithinOne(t *testing.T) {
	for _, n := range []int{1, 4, 16, 17, 64} {
		for m := 1; m <= 5; m++ {
			var members []string
			for k := range m {
				members = append(members, fmt.Sprintf("i%d", k))
			}
			owners := simulate(t, n, members, map[int]string{})
			if len(owners) != n {
				t.Errorf("n=%d m=%d: %d partitions owned", n, m, len(owners))
			}
			lo, hi := n, 0
			for _, id := range members {
				c := counts(owners)[id]
				lo, hi = min(lo, c), max(hi, c)
			}
			if hi-lo > 1 {
				t.Errorf("n=%d m=%d: counts %v differ by more than one", n, m, counts(owners))
			}
		}
	}
}

// A member's death moves only its partitions: the survivors keep theirs.
func TestPlanStickyOnDeath(t *testing.T) {
	owners := simulate(t, 16, []string{"a", "b", "c"}, map[int]string{})
	before := map[int]string{}
	for p, m := range owners {
		before[p] = m
		if m == "c" {
			delete(owners, p) // c's leases expired
		}
	}
	after := simulate(t, 16, []string{"a", "b"}, owners)
	for p, m := range before {
		if m != "c" && after[p] != m {
			t.Errorf("partition %d moved from survivor %s to %s", p, m, after[p])
		}
	}
	if c := counts(after); c["a"]+c["b"] != 16 || c["a"] != 8 {
		t.Errorf("after c's death: %v, want 8 and 8", c)
	}
}

// A joining member takes partitions only from those above their share.
func TestPlanJoinMovesFew(t *testing.T) {
	owners := simulate(t, 16, []string{"a", "b"}, map[int]string{})
	before := map[int]string{}
	for p, m := range owners {
		before[p] = m
	}
	after := simulate(t, 16, []string{"a", "b", "c"}, owners)
	moved := 0
	for p, m := range before {
		if after[p] != m {
			moved++
		}
	}
	if moved != counts(after)["c"] {
		t.Errorf("%d partitions moved, but c holds %d: survivors swapped partitions", moved, counts(after)["c"])
	}
}
