package app

import (
	"context"
	"time"
)

// pruneEvery is how often last-mail times past every cooldown are deleted.
const pruneEvery = time.Hour

// runPrune deletes, every pruneEvery, the gate's last-mail times that no
// cooldown in force can still use: older than the longest cooldown of any
// rule and of the ingress relay. A reload that lengthens a cooldown
// applies from the next prune; what was pruned before only lets one mail
// through sooner.
func (a *App) runPrune(ctx context.Context) error {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		longest := a.relayLimits().cooldown
		for _, r := range a.eng.Rules().Rules() {
			longest = max(longest, r.Cooldown)
		}
		n, err := a.gate.Prune(a.now().Add(-longest-time.Minute), 1000)
		switch {
		case err != nil:
			a.log.Warn("pruning expired cooldowns", "err", err)
		case n > 0:
			a.log.Debug("pruned expired cooldowns", "entries", n)
		}
	}
}
