package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Outbox is the clustered outbox: rendered mails in a work-queue stream,
// published with Nats-Msg-Id set to the mail's Message-ID, so a publish
// retried within the duplicate window (after a timeout, or by the next
// owner of a partition redelivering the reading that made the mail) is
// stored once. Any live instance delivers; a mail is acknowledged after
// its send succeeds (the SMTP 250), so a crash before that redelivers the
// same bytes, Message-ID included, to another instance.
type Outbox struct {
	js      jetstream.JetStream
	names   names
	subject string
	ackWait time.Duration
	log     *slog.Logger
}

// OutboxConfig says where the outbox lives; JS, Prefix, Replicas and
// Logger mean what they mean in Config.
type OutboxConfig struct {
	JS       jetstream.JetStream
	Prefix   string
	Replicas int
	// AckWait is how long a delivering instance has for one send before
	// another may try the mail; the delivery extends it while the send
	// runs, so it bounds how long a crashed instance's mail waits. 30s:
	// longer than a healthy SMTP exchange, short against a crash.
	AckWait time.Duration
	// Dedupe is the duplicate window for Message-IDs. 2 min, nats-server's
	// default: far longer than a publish retry or a partition takeover.
	Dedupe time.Duration
	Logger *slog.Logger
}

// Mail is one rendered mail taken from the outbox.
type Mail struct {
	MessageID  string
	Raw        []byte
	Deliveries uint64 // 1 on the first try
}

// ErrPermanent marks a send error no retry can fix (an SMTP 5xx): the mail
// is taken out of the outbox (dead-letter keeping: not yet).
var ErrPermanent = errors.New("permanent delivery failure")

// NewOutbox creates the outbox stream and its consumer if needed.
func NewOutbox(ctx context.Context, cfg OutboxConfig) (*Outbox, error) {
	if cfg.JS == nil {
		return nil, errors.New("cluster: outbox: no JetStream context")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = DefaultReplicas
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.Dedupe == 0 {
		cfg.Dedupe = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := newNames(cfg.Prefix)
	o := &Outbox{js: cfg.JS, names: n, subject: cfg.Prefix + ".outbox", ackWait: cfg.AckWait, log: cfg.Logger}
	scfg := jetstream.StreamConfig{
		Name:        n.outbox(),
		Description: "alertd: rendered mails waiting for delivery",
		Subjects:    []string{o.subject},
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  cfg.Dedupe,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}
	if _, err := createOrUpdateStream(ctx, cfg.JS, scfg); err != nil {
		return nil, fmt.Errorf("create outbox stream %s: %w", n.outbox(), err)
	}
	ccfg := jetstream.ConsumerConfig{
		Durable:     n.mailer(),
		Description: "alertd: every instance delivers from here",
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     cfg.AckWait,
		MaxDeliver:  -1,
		Replicas:    cfg.Replicas,
	}
	_, err := cfg.JS.CreateConsumer(ctx, n.outbox(), ccfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		_, err = cfg.JS.UpdateConsumer(ctx, n.outbox(), ccfg)
	}
	if err != nil {
		return nil, fmt.Errorf("create outbox consumer %s: %w", n.mailer(), err)
	}
	return o, nil
}

// Enqueue stores a rendered mail. It returns once the stream has it (the
// publish is acknowledged), so the caller may then ack what caused it. A
// second Enqueue of the same Message-ID within the window stores nothing
// and reports duplicate.
func (o *Outbox) Enqueue(ctx context.Context, messageID string, raw []byte) (duplicate bool, err error) {
	if messageID == "" {
		return false, errors.New("cluster: outbox: mail without a Message-ID")
	}
	ack, err := o.js.Publish(ctx, o.subject, raw, jetstream.WithMsgID(messageID))
	if err != nil {
		return false, fmt.Errorf("enqueue %s: %w", messageID, err)
	}
	return ack.Duplicate, nil
}

// Deliver hands mails to send, one at a time, until ctx ends. A nil error
// (the SMTP 250) acknowledges the mail, confirmed by the server; an error
// wrapping ErrPermanent removes it; any other error retries it later, with
// a delay growing with its deliveries.
func (o *Outbox) Deliver(ctx context.Context, send func(context.Context, Mail) error) error {
	cons, err := o.js.Consumer(ctx, o.names.outbox(), o.names.mailer())
	if err != nil {
		return fmt.Errorf("outbox consumer: %w", err)
	}
	// One at a time: a buffered mail a crash would strand waits AckWait.
	it, err := cons.Messages(jetstream.PullMaxMessages(1))
	if err != nil {
		return fmt.Errorf("outbox consumer: %w", err)
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return fmt.Errorf("outbox consumer: %w", err)
			}
			continue
		}
		o.deliverOne(ctx, m, send)
	}
}

func (o *Outbox) deliverOne(ctx context.Context, m jetstream.Msg, send func(context.Context, Mail) error) {
	mail := Mail{MessageID: m.Headers().Get(jetstream.MsgIDHeader), Raw: m.Data()}
	if md, err := m.Metadata(); err == nil {
		mail.Deliveries = md.NumDelivered
	}
	log := o.log.With("message_id", mail.MessageID, "deliveries", mail.Deliveries)
	err := o.keepAlive(m, func() error { return send(ctx, mail) })
	switch {
	case err == nil:
		if err := m.DoubleAck(ctx); err != nil {
			// Sent, but the ack did not land: it may be sent again, with
			// the same Message-ID.
			log.Warn("outbox: mail sent but its ack failed", "err", err)
		}
	case errors.Is(err, ErrPermanent):
		log.Error("outbox: mail refused for good; removed", "err", err)
		_ = m.Term()
	case ctx.Err() != nil:
		_ = m.Nak() // stopping: another instance takes it now
	default:
		delay := retryDelay(mail.Deliveries)
		log.Warn("outbox: delivery failed; retrying", "err", err, "retry_in", delay)
		_ = m.NakWithDelay(delay)
	}
}

// keepAlive runs f while telling JetStream every AckWait/3 that the mail
// is still being worked on, so a slow SMTP exchange is not redelivered.
func (o *Outbox) keepAlive(m jetstream.Msg, f func() error) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(o.ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	return f()
}

// retryDelay backs off from 1 s to 5 min: quick for a blip, patient with a
// provider that throttles.
func retryDelay(deliveries uint64) time.Duration {
	d := time.Second
	for k := uint64(1); k < deliveries && d < 5*time.Minute; k++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}
