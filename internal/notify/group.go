package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

// Grouping (group_wait): a rule's notifications wait in the groups bucket,
// written in the transaction that records them, and one mail per rule
// lists them when the window closes. The rate limit applies to the group
// mails, so a storm from 200 devices is one mail, not two hundred.
//
// The same bucket holds what the rate limit held back from a rule without
// group_wait: a summary mail lists them when the rule's window reopens.

// groupItem is one notification waiting for its group mail.
type groupItem struct {
	Series   string    `json:"series"`
	State    string    `json:"state"`
	Reminder bool      `json:"reminder,omitempty"`
	Value    string    `json:"value,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	At       time.Time `json:"at"`
}

// encodeGroupItem is n as its group's bucket stores it.
func encodeGroupItem(n *rules.Notification) ([]byte, error) {
	return json.Marshal(groupItem{Series: n.Series, State: n.State, Reminder: n.Reminder, Value: n.Value.Text, Since: n.Since, At: n.At})
}

// putGroupItemEncoded stores v, an encodeGroupItem, as rule's next item.
func putGroupItemEncoded(tx *store.Tx, rule string, v []byte) error {
	b := tx.Bucket(store.BucketGroups)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	k := append([]byte(rule), 0)
	k = fmt.Appendf(k, "%020d", seq)
	return b.Put(k, v)
}

// groups schedules the group mails.
type groups struct {
	mu   sync.Mutex
	due  map[string]time.Time // rule → when its window closes
	wake chan struct{}
}

func newGroups() *groups { return &groups{due: map[string]time.Time{}, wake: make(chan struct{}, 1)} }

// open starts rule's window unless one is open.
func (g *groups) open(rule string, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.due[rule]; ok {
		return
	}
	g.due[rule] = at
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// next returns the earliest window end.
func (g *groups) next() (string, time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var rule string
	var at time.Time
	for r, t := range g.due {
		if at.IsZero() || t.Before(at) {
			rule, at = r, t
		}
	}
	return rule, at
}

func (g *groups) done(rule string) {
	g.mu.Lock()
	delete(g.due, rule)
	g.mu.Unlock()
}

func decodeGroupItem(v []byte) (groupItem, error) {
	var it groupItem
	if err := json.Unmarshal(v, &it); err != nil {
		return groupItem{}, fmt.Errorf("decode group item: %w", err)
	}
	return it, nil
}

// unreadableItem is a group item that could not be decoded.
type unreadableItem struct {
	k, v []byte
	err  error
}

// quarantineItems moves unreadable group items to the store's quarantine
// inside tx, each reported once tx commits.
func (nf *Notifier) quarantineItems(tx *store.Tx, bad []unreadableItem) error {
	for _, u := range bad {
		if err := store.Quarantine(tx, store.BucketGroups, u.k, u.v, u.err, nf.OnQuarantine); err != nil {
			return err
		}
	}
	return nil
}

// RestoreGroups reopens the windows of notifications left waiting by a
// stop or a crash. An item that cannot be decoded is quarantined: it would
// be left out of its group mail anyway.
func (nf *Notifier) RestoreGroups() error {
	return nf.db.Update(func(tx *store.Tx) error {
		var bad []unreadableItem
		err := tx.Bucket(store.BucketGroups).ForEach(func(k, v []byte) error {
			if _, err := decodeGroupItem(v); err != nil {
				bad = append(bad, unreadableItem{bytes.Clone(k), bytes.Clone(v), err})
				return nil
			}
			name, _, _ := bytes.Cut(k, []byte{0})
			if r := nf.rule(string(name)); r != nil {
				nf.groups.open(r.Name, nf.now().Add(r.GroupWait))
			}
			return nil
		})
		if err != nil {
			return err
		}
		return nf.quarantineItems(tx, bad)
	})
}

// RunGroups sends each group mail when its window closes.
func (nf *Notifier) RunGroups(ctx context.Context) error {
	for {
		rule, at := nf.groups.next()
		wait := time.Hour
		if !at.IsZero() {
			wait = max(at.Sub(nf.now()), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil // what waits stays in bbolt for the next start
		case <-nf.groups.wake:
			t.Stop()
			continue
		case <-t.C:
		}
		r := nf.rule(rule)
		if r == nil {
			nf.groups.done(rule)
			continue
		}
		// The window closes before the flush reads the bucket: a
		// notification committed meanwhile opens a new window instead of
		// waiting unseen in bbolt.
		nf.groups.done(rule)
		retryAt, err := nf.flushGroup(r)
		switch {
		case err != nil:
			nf.log.Error("group mail", "rule", rule, "err", err)
			nf.groups.open(rule, nf.now().Add(time.Second))
		case !retryAt.IsZero():
			// Rate limited: what waits is sent, bundled with anything
			// newer, when the rule's rate window reopens.
			nf.groups.open(rule, later(retryAt, nf.now().Add(r.GroupWait)))
		}
	}
}

// flushGroup queues the group mail of r. When the rate limit holds it
// back, retryAt says when its window reopens.
func (nf *Notifier) flushGroup(r *rules.Rule) (retryAt time.Time, err error) {
	prefix := append([]byte(r.Name), 0)
	now := nf.now()
	msgID := mailer.NewMessageID(now, nf.from)
	c := groupCandidate(r)
	var w dedupe.Window
	var items []groupItem
	var keys [][]byte
	var bad []unreadableItem
	var more bool
	var mail *outbox.Entry // prepared for these keys, with mailFor held back
	var mailKeys [][]byte
	var mailFor uint64
	var queued outbox.Entry
	st := &step{
		decide: func(tx *store.Tx) (Decision, error) {
			items, keys, bad, more = readGroup(tx, prefix, nf.maxGroupItems)
			var err error
			w, err = nf.gate.Read(tx, c)
			return DecideGroup(r, w, now), err
		},
		prepared: func(d Decision) bool {
			return len(items) == 0 || d.Route != Outbox || (mail != nil && mailFor == d.Suppressed && sameKeys(mailKeys, keys))
		},
		prepare: func(d Decision) (err error) {
			mail, err = nf.groupEntry(r, items, d.Suppressed, now, msgID)
			mailKeys, mailFor = keys, d.Suppressed
			return err
		},
		write: func(tx *store.Tx, d Decision) error {
			if err := nf.quarantineItems(tx, bad); err != nil {
				return err
			}
			switch {
			case len(items) == 0:
				return nil // every item was unreadable: no mail is due
			case d.Route != Outbox:
				return nf.gate.Hold(tx, c, w)
			}
			b := tx.Bucket(store.BucketGroups)
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			if _, err := nf.gate.Pass(tx, c, w, now); err != nil {
				return err
			}
			queued = *mail
			return outbox.Put(tx, &queued)
		},
	}
	err = nf.settle(st)
	d := st.d
	switch {
	case err != nil:
		return time.Time{}, fmt.Errorf("queue group mail: %w", err)
	case d.Route != Outbox && len(items) > 0:
		nf.Metrics.Suppressed.WithLabelValues(r.Name, string(d.Reason)).Inc()
		return later(d.Reopens, nf.now().Add(time.Second)), nil
	}
	if more { // the rest in the next mail, as the rate limit allows
		nf.groups.open(r.Name, nf.now())
	}
	if len(items) == 0 {
		return time.Time{}, nil
	}
	nf.Metrics.MailQueued.Inc()
	nf.outbox.Kick()
	nf.log.Info("alert queued", "rule", r.Name, "alerts", len(items), "id", queued.ID, "subject", queued.Subject, "held_back_before", d.Suppressed)
	return time.Time{}, nil
}

// readGroup returns the readable items waiting under prefix with their
// keys, and those that could not be decoded: at most limit of both
// together when limit is above 0, and more says that others wait.
func readGroup(tx *store.Tx, prefix []byte, limit int) (items []groupItem, keys [][]byte, bad []unreadableItem, more bool) {
	c := tx.Bucket(store.BucketGroups).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if limit > 0 && len(items)+len(bad) == limit {
			return items, keys, bad, true
		}
		it, err := decodeGroupItem(v)
		if err != nil {
			bad = append(bad, unreadableItem{bytes.Clone(k), bytes.Clone(v), err})
			continue
		}
		items = append(items, it)
		keys = append(keys, bytes.Clone(k))
	}
	return items, keys, bad, false
}

func sameKeys(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// groupEntry composes the mail listing a group's notifications.
func (nf *Notifier) groupEntry(r *rules.Rule, items []groupItem, suppressed uint64, now time.Time, msgID string) (*outbox.Entry, error) {
	var firing, resolved int
	for _, it := range items {
		if it.State == rules.StateResolved {
			resolved++
		} else {
			firing++
		}
	}
	var parts []string
	if firing > 0 {
		parts = append(parts, fmt.Sprintf("%d firing", firing))
	}
	if resolved > 0 {
		parts = append(parts, fmt.Sprintf("%d resolved", resolved))
	}
	subject := fmt.Sprintf("[%s] %s: %s", r.Severity, r.Name, strings.Join(parts, ", "))
	var body strings.Builder
	if r.GroupWait == 0 {
		// A summary of what the rate limit held back.
		subject = fmt.Sprintf("[%s] %s: %d more alert(s) were held back by the rate limit", r.Severity, r.Name, len(items))
		fmt.Fprintf(&body, "The rate limit of rule %s (%s) held back %d alert(s) since its last mail:\n\n", r.Name, r.RateLimit, len(items))
	} else {
		fmt.Fprintf(&body, "Rule %s (%s): %s.\n\n", r.Name, r.Severity, strings.Join(parts, ", "))
	}
	page := groupHTML{Subject: subject, Intro: strings.TrimSpace(strings.SplitN(body.String(), "\n", 2)[0]),
		Colour: colour(rules.StateFiring, r.Severity), Footer: nf.footer, Silence: nf.footer.silenceCommand(r.Name, "")}
	if firing == 0 {
		page.Colour = colour(rules.StateResolved, r.Severity)
	}
	tw := tabwriter.NewWriter(&body, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tSERIES\tVALUE\tSINCE\tAT")
	for _, it := range items {
		state := it.State
		if it.Reminder {
			state = "still firing"
		}
		value := it.Value
		if r.Field != "" && value != "" {
			value = r.Field + "=" + value
		}
		since := "-"
		if !it.Since.IsZero() {
			since = r.InZone(it.Since).Format("15:04:05")
		}
		at := r.InZone(it.At).Format("15:04:05")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", state, it.Series, oneLine(value), since, at)
		page.Rows = append(page.Rows, groupRow{State: state, Series: it.Series, Value: oneLine(value), Since: since, At: at})
	}
	_ = tw.Flush()
	if suppressed > 0 {
		page.Held = fmt.Sprintf("Held back: %d mail(s) of this rule since its last one (cooldown or rate limit).", suppressed)
		fmt.Fprintf(&body, "\n%s\n", page.Held)
	}
	var html bytes.Buffer
	if err := groupTmpl.Execute(&html, page); err != nil {
		return nil, err
	}
	msg, err := mailer.Compose(mailer.Mail{
		From: nf.from, To: r.To, Subject: subject, Body: body.String() + nf.footer.text(r.Name, ""), HTML: html.String(),
		Date: r.InZone(now), MessageID: msgID, Urgent: r.Severity == "critical" && firing > 0,
		Headers: map[string]string{"X-Alertd-Rule": r.Name, "X-Alertd-State": "group"},
	})
	if err != nil {
		return nil, err
	}
	return &outbox.Entry{
		Rule: r.Name, Series: "(group)", From: nf.envFrom, To: nf.envelopeTo(r), Subject: subject,
		MessageID: msgID, Message: msg, Created: now, Next: now,
	}, nil
}

// oneLine keeps a table cell on one line whatever a device sent.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// OpenGroup opens rule's group window to close at at, unless one is open.
func (nf *Notifier) OpenGroup(rule string, at time.Time) { nf.groups.open(rule, at) }
