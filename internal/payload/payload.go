// Package payload says what a reading's payload may be, whichever way it
// arrived: the sources refuse what no rule could read, and the rules read
// no more. It holds limits and one linear check, nothing else.
package payload

const (
	// MaxBytes is the largest payload a rule reads: far above any
	// sensor's, small enough that a hostile client costs little.
	MaxBytes = 64 << 10
	// MaxDepth is the deepest JSON nesting a rule reads.
	MaxDepth = 32
)

// Depth is the deepest nesting of objects and lists in p, ignoring
// strings; it stops counting as soon as it passes MaxDepth, so a hostile
// payload costs one linear pass at most, before any JSON parser sees it.
func Depth(p []byte) int {
	d, deepest, inStr := 0, 0, false
	for i := 0; i < len(p); i++ {
		c := p[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '{', '[':
			d++
			deepest = max(deepest, d)
			if deepest > MaxDepth {
				return deepest
			}
		case '}', ']':
			d--
		}
	}
	return deepest
}
