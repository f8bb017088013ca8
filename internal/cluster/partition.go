package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Consumer tuning, each bounded by what a handover costs.
const (
	// pullBatch is how many readings a partition's consumer keeps buffered
	// ahead of the handler. A crashed owner's buffer waits AckWait; a
	// released one is handed back at once, so a few hundred is cheap.
	pullBatch = 128
	// retryAfter is how long a reading the handler refused waits, and how
	// long a consumer waits before it tries JetStream again.
	retryAfter = time.Second
	// stopWait bounds how long handing a partition over waits for its
	// handler to return, so the readings it buffered go back before the
	// lease does: a handler ignoring ctx must not stall the renewals of
	// every other partition. The late handler's ack is then refused.
	stopWait = 2 * time.Second
)

func (i *Ingest) startConsumer(ctx context.Context, l *lease, open Opener) {
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	l.cancel, l.done = cancel, done
	go func() {
		defer close(done)
		i.consume(cctx, l, open)
	}()
}

// shutdownWait bounds how long stopping the whole Ingest (the process
// ends) waits for the partitions' pipelines to close, saving what they
// hold (last-seen times), before the leases are released: within
// Docker's 10 s stop timeout.
const shutdownWait = 7 * time.Second

// stopConsumers cancels the consumers of leases and waits, together and
// for at most stopWait, for them to hand back what they buffered.
func (i *Ingest) stopConsumers(leases ...*lease) {
	i.stopConsumersWithin(stopWait, leases...)
}

func (i *Ingest) stopConsumersWithin(wait time.Duration, leases ...*lease) {
	for _, l := range leases {
		if l.cancel != nil {
			l.cancel()
		}
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for _, l := range leases {
		if l.done == nil {
			continue
		}
		select {
		case <-l.done:
		case <-timeout.C:
			i.log.Warn("partition handler did not return in time; its ack will be refused", "partition", l.p)
			return
		}
	}
}

// consume hands partition l.p's readings to handle, in order, while the
// lease is valid. When it runs out, the consumer stops on its own and says
// so; the coordinator then renews or drops the lease.
func (i *Ingest) consume(ctx context.Context, l *lease, open Opener) {
	log := i.log.With("partition", l.p, "term", l.term)
	var handle Handler
	for handle == nil {
		h, closeFn, err := open(ctx, l.p, l.term)
		if err == nil {
			handle = h
			defer closeFn()
			break
		}
		if ctx.Err() != nil {
			return
		}
		log.Error("partition not opened; trying again", "err", err)
		if !sleepCtx(ctx, retryAfter) {
			return
		}
	}
	var it jetstream.MessagesContext
	for it == nil {
		cons, err := i.cfg.JS.Consumer(ctx, i.names.stream, i.names.consumer(l.p))
		if err == nil {
			it, err = cons.Messages(jetstream.PullMaxMessages(pullBatch))
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("partition consumer", "err", err)
			if !sleepCtx(ctx, retryAfter) {
				return
			}
		}
	}
	defer i.handBack(it)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go i.watchdog(wctx, l, it)
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			// A missed heartbeat or a leader election: the iterator
			// keeps pulling by itself; a pause keeps an error that
			// repeats from spinning.
			log.Debug("partition consumer", "err", err)
			if !errors.Is(err, jetstream.ErrNoHeartbeat) && !sleepCtx(ctx, retryAfter/10) {
				return
			}
			continue
		}
		if !l.valid(i.cfg.now()) {
			_ = m.Nak()
			log.Warn("lease ran out before renewal; stepping back from the partition")
			select {
			case i.stepped <- l.p:
			default: // the coordinator has a wake-up pending already
			}
			return
		}
		r, err := i.reading(m, l)
		if err != nil {
			// Never deliverable: a subject outside our layout.
			log.Error("reading dropped", "subject", m.Subject(), "err", err)
			_ = m.Term()
			continue
		}
		if err := handle(ctx, r); err != nil {
			log.Warn("handler refused a reading; retrying it", "topic", r.Topic, "err", err)
			_ = m.NakWithDelay(retryAfter)
		}
	}
}

// watchdog stops pulling the moment the lease runs out unrenewed, even
// while the handler is stuck: the iterator's open pull requests would
// otherwise keep taking readings, redeliveries included, away from the new
// owner, each then waiting AckWait. Drain keeps what is buffered for the
// loop, which hands it back.
func (i *Ingest) watchdog(ctx context.Context, l *lease, it jetstream.MessagesContext) {
	for {
		left := l.remaining(i.cfg.now())
		if left <= 0 {
			it.Drain()
			return
		}
		if !sleepCtx(ctx, left) {
			return
		}
	}
}

// handBack returns the readings the iterator buffered but nobody handled,
// so the next owner gets them now rather than after AckWait. A crashed
// process hands back nothing, which is what the tests' crash models.
func (i *Ingest) handBack(it jetstream.MessagesContext) {
	if i.crash.Load() || i.cfg.JS.Conn().IsClosed() {
		it.Stop()
		return
	}
	it.Drain()
	for {
		m, err := it.Next(jetstream.NextMaxWait(100 * time.Millisecond))
		if err != nil {
			return
		}
		_ = m.Nak()
	}
}

func (i *Ingest) reading(m jetstream.Msg, l *lease) (Reading, error) {
	p, subject, err := i.names.splitStored(m.Subject())
	if err != nil {
		return Reading{}, err
	}
	r := Reading{
		Topic:     subjectToTopic(subject),
		Payload:   m.Data(),
		Partition: p,
		Term:      l.term,
		msg:       m,
		lease:     l,
		now:       i.cfg.now,
	}
	if md, err := m.Metadata(); err == nil {
		r.Stored, r.Deliveries = md.Timestamp, md.NumDelivered
	}
	return r, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
