// Package notify is the stage between an alert's transition and its mail.
// decide.go is the one place that decides whether a mail goes out now,
// where it goes, and if not, why (silenced, cooldown, rate limit, grouped),
// as pure functions of stored state and the clock. The mail is rendered
// before the write transaction, which decides again on what it reads and
// commits the decision, the series' new state and the mail at once. Group
// and summary mails are sent from here when their window closes, mail that
// devices ask alertd to relay is queued through the same decision, and
// each alert's state is published back to MQTT when mqtt.state_topic is
// set. It is given transitions by the engine and writes to the outbox; it
// calls back into neither.
package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/alerts"
	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/rules"
	"github.com/alertd/alertd/internal/store"
)

// Silences says until when a silence holds back the mails of rule on
// series (the zero time: none does). Whether the silences are kept in the
// store or shared by a cluster is not notify's concern.
type Silences interface {
	Silenced(rule, series string, now time.Time) time.Time
}

// Notifier commits transitions and their mails. Safe for concurrent use.
type Notifier struct {
	db       *store.DB
	gate     *dedupe.Gate
	silences Silences
	outbox   *outbox.Outbox
	from     string // header From
	envFrom  string // envelope sender (bare address)
	now      func() time.Time
	log      *slog.Logger
	Metrics  *metrics.Metrics
	rule     func(name string) *rules.Rule // the rules in force (a reload swaps them)
	groups   *groups
	footer   Footer

	// StateTopic and Publish send each alert's state back to MQTT
	// (mqtt.state_topic); Publish is nil when that is off. Set before use.
	StateTopic string
	Publish    func(topic string, payload []byte)
	// OnQuarantine hears of each group item that could not be read.
	OnQuarantine func(store.Quarantined)

	discovery *discovery // nil: no Home Assistant discovery

	maxGroupItems int // Options.MaxGroupItems
}

// EnableDiscovery turns on Home Assistant discovery; call it before use,
// with StateTopic and Publish set.
func (nf *Notifier) EnableDiscovery(d Discovery) {
	if d.Prefix == "" {
		d.Prefix = "homeassistant"
	}
	nf.discovery = &discovery{Discovery: d, announced: map[string]map[string]bool{}}
}

// Options are what a Notifier is built from.
type Options struct {
	DB       *store.DB
	Gate     *dedupe.Gate
	Silences Silences
	Outbox   *outbox.Outbox
	From     string // "Name <addr>", the mails' From
	Now      func() time.Time
	Log      *slog.Logger
	Metrics  *metrics.Metrics
	Rule     func(name string) *rules.Rule
	Footer   Footer // what every mail ends with
	// MaxGroupItems bounds the notifications one group or summary mail
	// takes (0: all that wait); the rest go in the next one. A replicated
	// store needs it: a mail's removal of its items is one commit.
	MaxGroupItems int
}

// New returns a Notifier.
func New(o Options) *Notifier {
	nf := &Notifier{db: o.DB, gate: o.Gate, silences: o.Silences, outbox: o.Outbox, from: o.From, now: o.Now,
		log: o.Log, Metrics: o.Metrics, rule: o.Rule, groups: newGroups(), footer: o.Footer, maxGroupItems: o.MaxGroupItems}
	if nf.footer.Host == "" {
		nf.footer.Host = "this machine"
	}
	if addr, err := mail.ParseAddress(o.From); err == nil {
		nf.envFrom = addr.Address
	}
	return nf
}

// EnvelopeFrom is the bare address the mails are sent from.
func (nf *Notifier) EnvelopeFrom() string { return nf.envFrom }

// Outcome is what became of a transition's mail, for the live series:
// when Mailed, the engine records that the mail was queued (Sent, with
// Thread its Message-ID) or held back until RetryAt.
type Outcome struct {
	Mailed  bool
	Sent    bool
	Thread  string
	Subject string // of the mail that went out, which later ones of the episode reuse
	RetryAt time.Time
	// HeldBySilence: the mail was held back by a silence.
	HeldBySilence bool
}

// Commit persists a transition and queues its mail, if it may go out now,
// in one transaction, then publishes the alert's new state. The Outcome
// says what became of the mail, for the engine to apply to the live
// series; an error means nothing was committed.
func (nf *Notifier) Commit(tr alerts.Transition) (Outcome, error) {
	outs, err := nf.CommitAll([]alerts.Transition{tr})
	if err != nil {
		return Outcome{}, err
	}
	return outs[0], nil
}

// CommitAll is Commit for several transitions (those one reading caused,
// or timers due together) in one transaction: one wait for the disk
// instead of one each. All are committed or none; outcomes are in the
// order of trs.
func (nf *Notifier) CommitAll(trs []alerts.Transition) ([]Outcome, error) {
	if len(trs) == 0 {
		return nil, nil
	}
	steps := make([]*step, len(trs))
	done := make([]func() Outcome, len(trs))
	for i := range trs {
		steps[i], done[i] = nf.transitionStep(&trs[i])
	}
	if err := nf.settle(steps...); err != nil {
		return nil, fmt.Errorf("record alert: %w", err)
	}
	outs := make([]Outcome, len(trs))
	for i := range trs {
		outs[i] = done[i]()
		if nf.Publish != nil && trs[i].Kind != alerts.Remind && trs[i].Kind.Mails() {
			nf.publishState(trs[i])
		}
	}
	return outs, nil
}

// statePayload is what mqtt.state_topic carries for one series.
type statePayload struct {
	Rule   string    `json:"rule"`
	Series string    `json:"series"`
	State  string    `json:"state"`
	Value  string    `json:"value,omitempty"`
	Since  time.Time `json:"since,omitzero"`
	At     time.Time `json:"at"`
}

func (nf *Notifier) publishState(tr alerts.Transition) {
	n := &tr.Notification
	b, err := json.Marshal(statePayload{
		Rule: n.Rule.Name, Series: n.Series, State: n.State, Value: n.Value.Text, Since: n.Since, At: n.At,
	})
	if err != nil {
		return
	}
	stateTopic := nf.StateTopic + "/" + n.Rule.Name + "/" + n.Series
	nf.announce(n.Rule.Name, n.Series, stateTopic)
	nf.Publish(stateTopic, b)
}

// errStale: the write found stored state that asks for another mail
// than the one prepared before it (another held-back count, another group).
var errStale = errors.New("stored state changed since the mail was prepared")

// A step is one decision settle makes and commits: decide on what a
// transaction finds, say whether the mail prepared so far fits the
// decision, prepare (render, compose) the one it needs, and write.
type step struct {
	decide   func(*store.Tx) (Decision, error)
	prepared func(Decision) bool
	prepare  func(Decision) error
	// encode, when set, computes outside the write transaction what
	// write would encode inside it for d (the records), so that the
	// store's single writer does not wait for it; write uses it only if
	// it decides d again.
	encode func(Decision) error
	write  func(*store.Tx, Decision) error
	d      Decision // the last decision made
}

// settle reads, decides, prepares and writes the steps in one write
// transaction. Each decision is made on what a read transaction finds,
// and the mail it needs is prepared outside any write; the write
// transaction decides again on what it reads (after the earlier steps'
// writes), and when that asks for another mail than the one prepared (two
// mails of one rule raced), the mails are prepared again and the write
// retried.
func (nf *Notifier) settle(steps ...*step) error {
	if err := nf.db.View(func(tx *store.Tx) error {
		for _, s := range steps {
			var err error
			if s.d, err = s.decide(tx); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	for range 8 {
		for _, s := range steps {
			if !s.prepared(s.d) {
				if err := s.prepare(s.d); err != nil {
					return err
				}
			}
			if s.encode != nil {
				if err := s.encode(s.d); err != nil {
					return err
				}
			}
		}
		err := nf.db.Batch(func(tx *store.Tx) error {
			for _, s := range steps {
				var err error
				if s.d, err = s.decide(tx); err != nil {
					return err
				}
				if !s.prepared(s.d) {
					return errStale
				}
				if err := s.write(tx, s.d); err != nil {
					return err
				}
			}
			return nil
		})
		if !errors.Is(err, errStale) {
			return err
		}
	}
	return errStale
}

// transitionStep is the step that decides on a transition's mail and
// commits the decision, the series' new state and the mail; done says,
// once it has committed, what became of the mail.
func (nf *Notifier) transitionStep(tr *alerts.Transition) (s *step, done func() Outcome) {
	if !tr.Kind.Mails() {
		return stateStep(tr), func() Outcome { return Outcome{} }
	}
	n := &tr.Notification
	now := nf.now()
	msgID := mailer.NewMessageID(now, nf.from) // fixed before the tx, which may run twice
	f := Facts{Kind: tr.Kind, Notified: tr.Notified, Rule: n.Rule, Now: now}
	if tr.Kind != alerts.Resolve {
		f.SilencedUntil = nf.silences.Silenced(n.Rule.Name, n.Series, now)
	}
	c := candidate(n.Rule, n.Series)

	var mail *outbox.Entry // prepared for Outbox with mailFor held back
	var mailFor uint64
	var queued outbox.Entry
	// record is the series as this transition leaves it under d.
	record := func(d Decision) alerts.Series {
		switch {
		case tr.Kind == alerts.Resolve:
			return tr.Record(false, "", "", time.Time{})
		case d.Sent():
			return tr.Record(true, msgID, mailSubject(mail, d), time.Time{})
		}
		rec := tr.Record(false, "", "", d.RetryAt)
		rec.HeldBySilence = d.Reason == Silenced
		return rec
	}
	var enc struct { // what encode computed, for the decision d
		d         Decision
		ok        bool
		rec, item []byte
	}
	s = &step{
		decide: func(tx *store.Tx) (Decision, error) {
			w, err := nf.gate.Read(tx, c)
			f.Window = w
			return Decide(f), err
		},
		prepared: func(d Decision) bool { return d.Route != Outbox || (mail != nil && mailFor == d.Suppressed) },
		prepare: func(d Decision) (err error) {
			mail, err = nf.entry(n, d.Suppressed, msgID, tr.Thread, tr.ThreadSubject)
			mailFor = d.Suppressed
			return err
		},
		encode: func(d Decision) (err error) {
			rec := record(d)
			enc.d, enc.ok = d, false
			if enc.rec, err = alerts.Encode(&rec); err != nil {
				return err
			}
			if d.Route == Group || d.Route == Summary {
				if enc.item, err = encodeGroupItem(n); err != nil {
					return err
				}
			}
			enc.ok = true
			return nil
		},
		write: func(tx *store.Tx, d Decision) error {
			rec := record(d)
			v, item := enc.rec, enc.item
			if !enc.ok || enc.d != d {
				var err error
				if v, err = alerts.Encode(&rec); err != nil {
					return err
				}
				item = nil
			}
			if err := alerts.PutEncoded(tx, &rec, v); err != nil {
				return err
			}
			if tr.Kind != alerts.Resolve {
				var err error
				switch d.Route {
				case Outbox, Group:
					_, err = nf.gate.Pass(tx, c, f.Window, now)
				case Summary:
					err = nf.gate.Hold(tx, c, f.Window)
				default:
					if d.Reason == Cooldown {
						err = nf.gate.Hold(tx, c, f.Window)
					}
				}
				if err != nil {
					return err
				}
			}
			switch d.Route {
			case Group, Summary:
				if item == nil {
					var err error
					if item, err = encodeGroupItem(n); err != nil {
						return err
					}
				}
				return putGroupItemEncoded(tx, n.Rule.Name, item)
			case Outbox:
				queued = *mail
				return outbox.Put(tx, &queued) // assigns its ID
			}
			return nil
		},
	}
	return s, func() Outcome {
		log := nf.log.With("rule", n.Rule.Name, "series", n.Series, "transition", tr.Kind.String())
		return nf.decided(log, n, tr.Kind, s.d, msgID, &queued)
	}
}

// stateStep commits a transition that mails nobody (a breach held pending
// by for:, or a pending one cancelled): only the series' new state.
func stateStep(tr *alerts.Transition) *step {
	return &step{
		decide:   func(*store.Tx) (Decision, error) { return Decision{}, nil },
		prepared: func(Decision) bool { return true },
		prepare:  func(Decision) error { return nil },
		write: func(tx *store.Tx, _ Decision) error {
			rec := tr.Snapshot
			return alerts.Put(tx, &rec)
		},
	}
}

// mailSubject is the subject of the mail d sends on its own; "" for a
// line of a group mail.
func mailSubject(mail *outbox.Entry, d Decision) string {
	if d.Route != Outbox || mail == nil {
		return ""
	}
	return mail.Subject
}

// decided reports a committed decision and says what the engine must
// apply to the live series.
func (nf *Notifier) decided(log *slog.Logger, n *rules.Notification, kind alerts.Kind, d Decision, msgID string, e *outbox.Entry) Outcome {
	switch d.Route {
	case Outbox:
		nf.Metrics.MailQueued.Inc()
		nf.outbox.Kick()
		log.Info("alert queued", "id", e.ID, "subject", e.Subject, "held_back_before", d.Suppressed)
	case Group:
		nf.groups.open(n.Rule.Name, nf.now().Add(n.Rule.GroupWait))
		log.Debug("notification waits for its group mail", "group_wait", n.Rule.GroupWait)
	case Summary:
		nf.groups.open(n.Rule.Name, d.Reopens)
	}
	if kind == alerts.Resolve {
		if !d.Sent() {
			log.Debug("alert resolved without a mail", "reason", d.Reason)
		}
		return Outcome{}
	}
	switch d.Reason {
	case Silenced, Cooldown, RateLimited:
		nf.Metrics.Suppressed.WithLabelValues(n.Rule.Name, string(d.Reason)).Inc()
		log.Debug("notification held back", "reason", d.Reason, "retry_at", d.RetryAt, "window_reopens", d.Reopens)
	}
	// Held back, the series is firing all the same, and must stay so
	// after a restart: a first mail held by a silence or the cooldown is
	// tried again at RetryAt; one held by the rate limit is in the summary.
	if d.Sent() {
		subject := ""
		if d.Route == Outbox {
			subject = e.Subject
		}
		return Outcome{Mailed: true, Sent: true, Thread: msgID, Subject: subject}
	}
	return Outcome{Mailed: true, RetryAt: d.RetryAt, HeldBySilence: d.Reason == Silenced}
}

// ComposeMail renders n's mail and builds its bytes as the outbox holds
// them: from, the rule's recipients, the subject and body of its
// templates with footer, an HTML part, Date the transition's time in the
// rule's zone, Message-ID msgID, and a reply to thread when the episode
// had a mail before. A later mail of an episode takes the first mail's
// subject (threadSubject) with "Re: " when the rule threads: Gmail groups
// a conversation only by the same subject, Outlook's conversation view by
// the subject without its prefix, and both by the In-Reply-To and
// References headers a reply also has. The state is then told by the
// body's first line, which inbox lists show beside the subject. It also
// returns the subject.
func ComposeMail(from string, footer Footer, n *rules.Notification, suppressed uint64, msgID, thread, threadSubject string) (string, []byte, error) {
	subject, body, err := n.Render(suppressed)
	if err != nil {
		// A template that parsed and dry-ran at load can still fail on
		// real data ({{index .Wildcards 3}}): send the alert anyway.
		subject = strings.Join(strings.Fields(fmt.Sprintf("[%s] %s: %s %s (template error)", n.Rule.Severity, n.Rule.Name, n.Series, n.State)), " ")
		body = fmt.Sprintf("The rule's template failed: %v\n\nData: %+v\n", err, n.Data(suppressed))
	}
	if thread != "" && threadSubject != "" && n.Rule.ThreadsSubject() {
		subject = "Re: " + strings.TrimPrefix(threadSubject, "Re: ")
	}
	html, err := alertHTMLFor(footer, n, suppressed, subject)
	if err != nil {
		return "", nil, err
	}
	msg, err := mailer.Compose(mailer.Mail{
		From: from, To: n.Rule.To, Subject: subject, Body: body + footer.text(n.Rule.Name, n.Series), HTML: html,
		Date: n.Rule.InZone(n.At), MessageID: msgID, InReplyTo: thread,
		Urgent:  n.Rule.Severity == "critical" && n.State != rules.StateResolved,
		Headers: map[string]string{"X-Alertd-Rule": n.Rule.Name, "X-Alertd-State": n.State},
	})
	return subject, msg, err
}

// envelopeTo is the bare addresses of a rule's recipients.
func (nf *Notifier) envelopeTo(r *rules.Rule) []string {
	rcpts := make([]string, 0, len(r.To))
	for _, to := range r.To {
		if a, err := mail.ParseAddress(to); err == nil {
			rcpts = append(rcpts, a.Address)
		}
	}
	return rcpts
}

// entry renders and composes the mail for n.
func (nf *Notifier) entry(n *rules.Notification, suppressed uint64, msgID, thread, threadSubject string) (*outbox.Entry, error) {
	subject, msg, err := ComposeMail(nf.from, nf.footer, n, suppressed, msgID, thread, threadSubject)
	if err != nil {
		return nil, err
	}
	rcpts := nf.envelopeTo(n.Rule)
	return &outbox.Entry{
		Rule: n.Rule.Name, Series: n.Series, From: nf.envFrom, To: rcpts, Subject: subject,
		MessageID: msgID, Message: msg, Created: nf.now(), Next: nf.now(),
	}, nil
}
