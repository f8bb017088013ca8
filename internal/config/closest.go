package config

import "strings"

// Closest returns the candidate nearest to name, for "did you mean"
// hints: fewer than 3 edits away (ignoring case, a swap of two neighbours
// counting as one edit, as typing makes them) and keeping at least one
// character of name. ok is false when none is that close; of two equally
// close, the first wins.
func Closest(name string, candidates []string) (best string, ok bool) {
	bestDist := min(3, len(name))
	for _, c := range candidates {
		if d := typoDistance(strings.ToLower(name), strings.ToLower(c)); d < bestDist {
			best, bestDist, ok = c, d, true
		}
	}
	return best, ok
}

// typoDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and transpositions of adjacent bytes.
func typoDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
