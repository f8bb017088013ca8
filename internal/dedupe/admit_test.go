package dedupe

import (
	"fmt"
	"time"

	"github.com/alertd/alertd/internal/store"
)

// The gate's tests drive it the way the notify stage does — read, check,
// pass or hold, and write the mail, in one transaction — through Admit.

// Verdict is Admit's answer.
type Verdict struct {
	Admitted bool
	Reason   Reason // why it was held back, when not admitted
	// Suppressed is, for an admitted notification, how many of this rule's
	// notifications were held back since its previous mail.
	Suppressed uint64
	// RetryAt is, for one held back, when the cooldown ends or the rate
	// window reopens.
	RetryAt time.Time
}

// Enqueue writes the admitted notification's mail inside the gate's
// transaction. It may run more than once (store batches retry), so it must
// depend only on its arguments.
type Enqueue func(tx *store.Tx, suppressed uint64) error

// Admit decides on c in one write transaction and records the outcome:
// admitted, the mail is recorded and enqueue runs in that transaction;
// held back, the rule's held-back count goes up.
func (g *Gate) Admit(c Candidate, enqueue Enqueue) (Verdict, error) {
	now := g.now()
	var v Verdict
	err := g.db.Batch(func(tx *store.Tx) error {
		v = Verdict{}
		w, err := g.Read(tx, c)
		if err != nil {
			return err
		}
		if v.Reason, v.RetryAt = Check(c, w, now); v.Reason != "" {
			return g.Hold(tx, c, w)
		}
		v.Admitted = true
		if v.Suppressed, err = g.Pass(tx, c, w, now); err != nil {
			return err
		}
		return enqueue(tx, v.Suppressed)
	})
	if err != nil {
		return Verdict{}, fmt.Errorf("admit notification: %w", err)
	}
	return v, nil
}
