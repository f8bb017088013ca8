package dedupe

import "time"

// Passed is w after c's mail went out at now: what Pass stores. The rule's
// send times drop those that left its window and gain now (a group member
// leaves them to its group mail), its held-back count starts again, and
// with a cooldown the series' last mail is now. A dry run follows the gate
// with it and no store.
func (w Window) Passed(c Candidate, now time.Time) Window {
	if !c.Member {
		w.Sent = append(prune(w.Sent, c, now), now.UnixNano())
		w.Held = 0
	}
	if c.Cooldown > 0 {
		w.LastMail = now
	}
	return w
}

// HeldBack is w after c's mail was held back: what Hold stores.
func (w Window) HeldBack() Window {
	w.Held++
	return w
}
