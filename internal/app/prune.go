package app

import (
	"context"
	"time"

	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/rules"
)

// pruneEvery is how often last-mail times past every cooldown are deleted.
const pruneEvery = time.Hour

// runPrune deletes, every pruneEvery, the gate's last-mail times that no
// cooldown in force can still use: older than the longest cooldown of any
// rule and of the ingress relay. A reload that lengthens a cooldown
// applies from the next prune; what was pruned before only lets one mail
// through sooner.
// per bounds the entries deleted per transaction.
func (a *App) runPrune(ctx context.Context, gate *dedupe.Gate, rs func() *rules.Engine, per int) error {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		longest := a.relayLimits().cooldown
		for _, r := range rs().Rules() {
			longest = max(longest, r.Cooldown)
		}
		n, err := gate.Prune(a.now().Add(-longest-time.Minute), per)
		switch {
		case err != nil:
			a.log.Warn("pruning expired cooldowns", "err", err)
		case n > 0:
			a.log.Debug("pruned expired cooldowns", "entries", n)
		}
	}
}
