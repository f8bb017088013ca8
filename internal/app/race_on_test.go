//go:build race

package app

// raceEnabled: the race detector makes every store write several times
// slower; tests that measure against a wall-clock budget scale down.
const raceEnabled = true
