package notify

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/dedupe"
	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/store"
)

// Relay is one mail from a device (the SMTP or HTTP ingress) on its way to
// the outbox, already composed.
type Relay struct {
	Client    netip.Addr
	Key       string // what makes two mails the same, for the cooldown
	Series    string // shown by alertd outbox list
	To        []string
	Subject   string
	MessageID string
	Message   []byte
	// Cooldown holds back the same mail sent again; Limit mails per Per
	// bound what one client may have relayed.
	Cooldown time.Duration
	Limit    int
	Per      time.Duration
}

// relayRule is the gate's name for device mail of one client: its rate
// window lives beside the rules', under a name no rule can have.
const relayRule = "\x00ingress\x00"

// QueueRelay decides on r (DecideRelay) and, when it goes out, writes it
// to the outbox in the transaction that records the decision. The
// Decision says why it was held back, if it was; the id is the outbox
// entry's. A mail that follows held-back ones carries their count in an
// X-Alertd-Held-Back header.
func (nf *Notifier) QueueRelay(r Relay) (Decision, uint64, error) {
	c := dedupe.Candidate{Rule: relayRule + r.Client.String(), Series: r.Key, Cooldown: r.Cooldown, Limit: r.Limit, Per: r.Per}
	now := nf.now()
	var w dedupe.Window
	var msg []byte // prepared with msgFor held back
	msgFor := ^uint64(0)
	var id uint64
	st := &step{
		decide: func(tx *store.Tx) (Decision, error) {
			var err error
			w, err = nf.gate.Read(tx, c)
			return DecideRelay(c, w, now), err
		},
		prepared: func(d Decision) bool { return d.Route != Outbox || msgFor == d.Suppressed },
		prepare: func(d Decision) error {
			msg, msgFor = r.Message, d.Suppressed
			if d.Suppressed > 0 {
				msg = append(fmt.Appendf(nil, "X-Alertd-Held-Back: %d\r\n", d.Suppressed), r.Message...)
			}
			return nil
		},
		write: func(tx *store.Tx, d Decision) error {
			if d.Route != Outbox {
				return nf.gate.Hold(tx, c, w)
			}
			if _, err := nf.gate.Pass(tx, c, w, now); err != nil {
				return err
			}
			e := &outbox.Entry{
				Rule: "ingress", Series: r.Series, From: nf.envFrom, To: r.To, Subject: r.Subject,
				MessageID: r.MessageID, Message: msg, Created: now, Next: now,
			}
			err := outbox.Put(tx, e)
			id = e.ID
			return err
		},
	}
	err := nf.settle(st)
	d := st.d
	if err != nil {
		return d, 0, fmt.Errorf("queue device mail: %w", err)
	}
	if d.Route != Outbox {
		nf.Metrics.Suppressed.WithLabelValues("ingress", string(d.Reason)).Inc()
		nf.log.Info("device mail held back", "client", r.Client, "reason", d.Reason, "subject", r.Subject)
		return d, 0, nil
	}
	nf.Metrics.MailQueued.Inc()
	nf.outbox.Kick()
	nf.log.Info("device mail queued", "id", id, "client", r.Client, "to", strings.Join(r.To, ","), "subject", r.Subject, "held_back_before", d.Suppressed)
	return d, id, nil
}

// ComposeDeviceMail composes a mail a device asked for over HTTP, as
// alertd's own From; it returns its Message-ID and bytes.
func (nf *Notifier) ComposeDeviceMail(client netip.Addr, to []string, subject, text string) (string, []byte, error) {
	now := nf.now()
	msgID := mailer.NewMessageID(now, nf.from)
	msg, err := mailer.Compose(mailer.Mail{
		From: nf.from, To: to, Subject: subject, Body: text, Date: now, MessageID: msgID,
		Headers: map[string]string{"X-Alertd-Source": "http " + client.String()},
	})
	return msgID, msg, err
}
