package notify

import "time"

// GroupDue is when rule's waiting group or summary mail is next tried
// (its group_wait ends, or its rate window reopens), and whether one
// waits: what a status page says of the mails the rate limit holds back.
func (nf *Notifier) GroupDue(rule string) (time.Time, bool) {
	nf.groups.mu.Lock()
	defer nf.groups.mu.Unlock()
	at, ok := nf.groups.due[rule]
	return at, ok
}
