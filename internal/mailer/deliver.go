package mailer

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/outbox"
)

// Transport delivers one message. SMTPTransport and Spool implement it.
type Transport interface {
	Send(ctx context.Context, env Envelope, msg []byte) (Outcome, error)
	Close() error
}

// Queue is the slice of the outbox the deliverer uses.
type Queue interface {
	Due(now time.Time, limit int) ([]*outbox.Entry, time.Time, error)
	Update(e *outbox.Entry) error
	Done(id uint64) error
	Bury(e *outbox.Entry, now time.Time) error
	BuryRecipients(e *outbox.Entry, rcpts []string, reason string, now time.Time) (*outbox.Entry, error)
	Wake() <-chan struct{}
	// RetryRequested reports (once) that an operator asked to retry now.
	RetryRequested() bool
}

// Retry is the backoff policy for retryable failures.
type Retry struct {
	Initial, Max, GiveUpAfter time.Duration
}

// Deliverer drains the queue through the transport: one goroutine, one
// connection, oldest mail first.
type Deliverer struct {
	Queue     Queue
	Transport Transport
	// Parallel are more sessions to the same server (smtp.max_connections
	// - 1). With them a batch is sent concurrently, so mails of one batch
	// may arrive out of order; with none, strictly in order.
	Parallel []Transport
	Retry    Retry
	Metrics  *metrics.Metrics
	Log      *slog.Logger
	Now      func() time.Time
	// OnIdle runs each time the queue has nothing due (metrics refresh).
	OnIdle func()
	// Linger is how long idle sessions stay open for the next mail
	// before they are closed (0: closed at once). DefaultLinger is
	// Postfix's connection cache time.
	Linger time.Duration

	mu          sync.Mutex // guards lastProblem, blockedUntil and undone
	lastProblem string     // the last auth/config problem logged, to log it once
	// blockedUntil holds the queue after a failure of the server or the
	// connection (not of one recipient): nothing newer is tried before
	// the failed mail's next attempt, so mail arrives in the order it was
	// raised once the server is back.
	blockedUntil time.Time
	// undone holds the mails delivered whose removal from the outbox
	// failed: they are not sent again, their removal is retried.
	undone map[uint64]bool
}

// DefaultLinger keeps an idle session open for the next mail of a burst,
// as long as Postfix's smtp_connection_cache_time_limit.
const DefaultLinger = 2 * time.Second

// batch bounds how many entries one pass reads from bbolt.
const batch = 64

// Run delivers until ctx is done. The mail in flight when ctx ends is left
// in the outbox (its attempt may have reached the server: at-least-once).
func (d *Deliverer) Run(ctx context.Context) error {
	transports := append([]Transport{d.Transport}, d.Parallel...)
	closeAll := func() {
		for _, t := range transports {
			_ = t.Close()
		}
	}
	defer closeAll()
	for {
		if d.Queue.RetryRequested() {
			d.setBlocked(time.Time{}) // the operator said: now
		}
		if until := d.blocked(); until.After(d.Now()) {
			if d.OnIdle != nil {
				d.OnIdle() // the queue metrics show the stuck mail
			}
			if _, err := d.wait(ctx, until); err != nil {
				return nil
			}
			continue
		}
		due, next, err := d.Queue.Due(d.Now(), batch)
		if err != nil {
			d.Log.Error("read outbox", "err", err)
			next = d.Now().Add(time.Second)
		}
		d.send(ctx, transports, due)
		if ctx.Err() != nil {
			return nil
		}
		if len(due) > 0 {
			continue // look again: more may be due, or were added meanwhile
		}
		if d.OnIdle != nil {
			d.OnIdle()
		}
		if d.Linger > 0 {
			// Alerts come in bursts: keep the sessions open a moment for
			// the next mail (no new connection, TLS handshake and login),
			// then let go of the server's connections.
			until := d.Now().Add(d.Linger)
			if !next.IsZero() && next.Before(until) {
				until = next
			}
			kicked, err := d.wait(ctx, until)
			if err != nil {
				return nil
			}
			if kicked || until.Equal(next) {
				continue // mail to send, on the open sessions
			}
		}
		closeAll() // nothing due: do not hold the server's connections
		if _, err := d.wait(ctx, next); err != nil {
			return nil
		}
	}
}

// send attempts the due entries, over one session in order, or spread
// over several. It stops early when the server fails.
func (d *Deliverer) send(ctx context.Context, transports []Transport, due []*outbox.Entry) {
	if len(transports) == 1 {
		for _, e := range due {
			if ctx.Err() != nil || d.blocked().After(d.Now()) {
				return
			}
			d.attempt(ctx, transports[0], e)
		}
		return
	}
	work := make(chan *outbox.Entry)
	var wg sync.WaitGroup
	for _, t := range transports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				if ctx.Err() == nil && !d.blocked().After(d.Now()) {
					d.attempt(ctx, t, e)
				}
			}
		}()
	}
	for _, e := range due {
		work <- e
	}
	close(work)
	wg.Wait()
}

func (d *Deliverer) blocked() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.blockedUntil
}

func (d *Deliverer) setBlocked(t time.Time) {
	d.mu.Lock()
	d.blockedUntil = t
	d.mu.Unlock()
}

// wait returns when next comes (zero: never), or when the outbox was
// kicked (kicked true), or with ctx's error.
func (d *Deliverer) wait(ctx context.Context, next time.Time) (kicked bool, err error) {
	var timer <-chan time.Time
	if !next.IsZero() {
		t := time.NewTimer(max(next.Sub(d.Now()), 10*time.Millisecond))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-d.Queue.Wake():
		return true, nil
	case <-timer:
		return false, nil
	}
}

func (d *Deliverer) attempt(ctx context.Context, t Transport, e *outbox.Entry) {
	if d.isUndone(e.ID) {
		// Delivered already: only its removal is left to do.
		d.done(d.Log.With("id", e.ID, "rule", e.Rule), e.ID)
		return
	}
	e.Attempts++
	log := d.Log.With("id", e.ID, "rule", e.Rule, "attempt", e.Attempts)
	out, err := t.Send(ctx, Envelope{From: e.From, To: e.To, ID: "alertd-" + strconv.FormatUint(e.ID, 10)}, e.Message)
	if ctx.Err() != nil && err != nil {
		return // shutting down: the entry stays queued as it was
	}
	if err != nil {
		d.failed(log, e, asError(err))
		return
	}
	d.Metrics.MailAttempts.WithLabelValues("2xx").Inc()
	d.recovered(log)
	if len(out.Accepted) > 0 {
		d.Metrics.MailSent.Inc()
		e.Delivered = append(e.Delivered, out.Accepted...)
		log.Info("mail delivered", "to", out.Accepted, "subject", e.Subject)
	}
	var retry, refused, reasons []string
	for _, r := range out.Rejected {
		e.LastError = r.Rcpt + ": " + r.Err.Error()
		if r.Err.Retryable() {
			retry = append(retry, r.Rcpt)
			continue
		}
		refused = append(refused, r.Rcpt)
		reasons = append(reasons, e.LastError)
		d.Metrics.MailFailed.WithLabelValues(KindPermanent.String()).Inc()
		log.Error("recipient refused permanently", "rcpt", r.Rcpt, "err", r.Err)
	}
	if len(refused) > 0 && (len(retry) > 0 || len(e.Delivered) > 0) {
		// Others got it or will: the refused recipients get a dead letter
		// of their own, with the server's words, that "outbox retry" can
		// send again.
		d.buryRecipients(log, e, refused, strings.Join(reasons, "; "))
		refused = nil
	}
	switch {
	case len(retry) > 0:
		e.To = retry // only those: the others have it, or never will
		d.Metrics.MailFailed.WithLabelValues(KindTemporary.String()).Inc()
		d.reschedule(log, e, true)
		if len(out.Accepted) == 0 && e.DeadAt.IsZero() {
			// Nobody took it: the queue waits for it, to keep the order.
			d.setBlocked(e.Next)
		}
	case len(e.Delivered) > 0:
		d.done(log, e.ID)
	default:
		e.To = refused // kept, so "outbox retry" can try them again
		d.bury(log, e)
	}
}

func asError(err error) *Error {
	var me *Error
	if errors.As(err, &me) {
		return me
	}
	return &Error{Kind: KindNetwork, Err: err}
}

func (d *Deliverer) failed(log *slog.Logger, e *outbox.Entry, me *Error) {
	d.Metrics.MailAttempts.WithLabelValues(replyClass(me)).Inc()
	d.Metrics.MailFailed.WithLabelValues(me.Kind.String()).Inc()
	e.LastError = me.Error()
	if !me.Retryable() {
		log.Error("mail refused permanently", "err", me, "subject", e.Subject)
		d.bury(log, e)
		return
	}
	switch me.Kind {
	case KindAuth, KindConfig:
		// The operator's configuration, not this mail: say it once, not at
		// every retry, and keep the mail queued until it is fixed.
		d.mu.Lock()
		changed := me.Error() != d.lastProblem
		d.lastProblem = me.Error()
		d.mu.Unlock()
		if changed {
			log.Error("cannot deliver mail: fix the smtp configuration; mail stays queued", "err", me)
		}
	default:
		log.Warn("delivery failed, will retry", "err", me)
	}
	// An auth or config failure is not this mail's fault: it waits for the
	// fix, however long.
	d.reschedule(log, e, me.Kind != KindAuth && me.Kind != KindConfig)
	if e.DeadAt.IsZero() {
		d.setBlocked(e.Next)
	}
}

func (d *Deliverer) recovered(log *slog.Logger) {
	d.mu.Lock()
	previous := d.lastProblem
	d.lastProblem = ""
	d.mu.Unlock()
	if previous != "" {
		log.Info("smtp delivery works again", "previous_error", previous)
	}
}

func replyClass(me *Error) string {
	switch {
	case me.Code >= 500:
		return "5xx"
	case me.Code >= 400:
		return "4xx"
	}
	return "network"
}

// reschedule sets the next attempt with exponential backoff and jitter, or
// when mayGiveUp, gives up once the mail is older than GiveUpAfter.
func (d *Deliverer) reschedule(log *slog.Logger, e *outbox.Entry, mayGiveUp bool) {
	now := d.Now()
	if mayGiveUp && now.Sub(e.Created) >= d.Retry.GiveUpAfter {
		e.LastError = "gave up after " + d.Retry.GiveUpAfter.String() + ": " + e.LastError
		d.bury(log, e)
		return
	}
	e.Next = now.Add(d.Retry.backoff(e.Attempts))
	d.check(log, d.Queue.Update(e))
}

// backoff is Initial·2^(attempt-1), capped at Max, spread ±20% so many
// queued mails do not hit a recovering server in one instant.
func (r Retry) backoff(attempt int) time.Duration {
	delay := r.Initial
	for i := 1; i < attempt && delay < r.Max; i++ {
		delay *= 2
	}
	delay = min(delay, r.Max)
	jittered := time.Duration(float64(delay) * (0.8 + 0.4*rand.Float64()))
	return min(max(jittered, r.Initial), r.Max)
}

func (d *Deliverer) bury(log *slog.Logger, e *outbox.Entry) {
	if err := d.Queue.Bury(e, d.Now()); err != nil {
		d.check(log, err)
		return
	}
	d.Metrics.MailDead.Inc()
	log.Error("mail moved to the dead letters", "reason", e.LastError, "subject", e.Subject,
		"undelivered", strings.Join(slices.Compact(e.To), ","))
}

func (d *Deliverer) buryRecipients(log *slog.Logger, e *outbox.Entry, rcpts []string, reason string) {
	dead, err := d.Queue.BuryRecipients(e, rcpts, reason, d.Now())
	if err != nil {
		d.check(log, err)
		return
	}
	d.Metrics.MailDead.Inc()
	log.Error("mail moved to the dead letters for some recipients", "dead_id", dead.ID, "reason", reason,
		"subject", e.Subject, "undelivered", strings.Join(rcpts, ","))
}

// done removes a delivered mail from the outbox. When that fails (a
// disk error; in cluster mode, the partition's state out of reach or
// taken over) the mail is remembered as delivered, so that it is not sent
// again and again, and the queue pauses for a second before the removal
// is tried again.
func (d *Deliverer) done(log *slog.Logger, id uint64) {
	err := d.Queue.Done(id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.undone, id)
		return
	}
	log.Error("delivered, but not removed from the outbox; it will not be sent again, its removal is retried", "err", err)
	if d.undone == nil {
		d.undone = map[uint64]bool{}
	}
	d.undone[id] = true
	d.blockedUntil = later(d.blockedUntil, d.Now().Add(time.Second))
}

func (d *Deliverer) isUndone(id uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.undone[id]
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (d *Deliverer) check(log *slog.Logger, err error) {
	if err != nil {
		log.Error("update outbox", "err", err)
	}
}
