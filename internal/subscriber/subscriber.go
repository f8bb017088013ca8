// Package subscriber is alertd's MQTT ingress. It keeps one paho client
// connected forever (retrying every second, resubscribing after every
// reconnect), with a persistent session (clean session off) so QoS 1
// readings published while alertd was away are delivered when it returns.
//
// Each message becomes an event.Event handed to a Handler on a worker chosen
// by topic, so readings of one topic are handled in order while different
// topics proceed in parallel. A message is acknowledged only after its
// Handler returned nil, that is after any alert it caused is in the outbox:
// a crash before that makes the broker deliver it again.
//
// Why the broker cannot be reached — its CONNACK refusal (MQTT 3.1.1
// section 3.2.2.3), a refused connection, DNS, TLS — is logged in plain
// words when it changes, not at every retry, and told by Why (why.go).
package subscriber

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/alertd/alertd/internal/event"
)

// Handler processes one event. An error leaves the message unacknowledged.
// ev is valid only during the call: each worker reuses its own, so a
// reading costs no allocation of its event; what must outlive the call
// (a topic, a copy of the payload) is copied out.
type Handler interface {
	Handle(ev *event.Event) error
}

// Quick is a Handler that can finish some events at once, on paho's
// receiving goroutine, without blocking: Quick returns false for an event
// that needs Handle (a write to the store), and did nothing with it then.
// The subscriber tries Quick only when no earlier message of the same
// shard is still with a worker, so a topic's messages keep their order.
type Quick interface {
	Quick(ev *event.Event) bool
}

// Options configure the subscriber.
type Options struct {
	Broker   string // tcp://host:1883, ssl://, ws://, wss://
	ClientID string // stable: the broker keeps the session under it
	Username string
	Password string
	QoS      byte
	TLS      *tls.Config
	Filters  []string
	// Workers is the number of parallel handlers (default 128). Readings of
	// one topic always go to the same worker, in order.
	Workers int
	Log     *slog.Logger
	// Connected is told about connection changes (metrics, health).
	Connected func(bool)
	// Stale are filters an earlier run subscribed that the rules no longer
	// have. The session is persistent, so the broker still holds them (and
	// queues their readings while alertd is away); they are unsubscribed at
	// the first connect.
	Stale []string
	// Held, when set, is told the filters the broker may hold for this
	// session whenever that set changes, for the next start's Stale.
	Held func(filters []string)
	// StatusTopic, when set, says whether alertd is there: "online"
	// (retained) at every connect, "offline" at a clean stop, and the same
	// as the connection's last will, which the broker publishes when
	// alertd vanishes. Home Assistant reads it as availability.
	StatusTopic string
}

// Status payloads on StatusTopic.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// Subscriber is the MQTT ingress.
type Subscriber struct {
	opts       Options
	handler    Handler
	log        *slog.Logger
	shards     []chan work
	pending    []atomic.Int32 // per shard: messages handed to its worker and not yet done
	running    []atomic.Bool  // per shard: its worker goroutine runs
	workersMu  sync.Mutex     // orders starting a worker against Run's wait for them
	stopped    bool           // Run waits for the workers: none may start
	workers    sync.WaitGroup
	quick      Quick       // nil: every message goes to a worker
	routed     event.Event // the receiving goroutine's event for quick, reused
	routedBusy atomic.Bool // routed is in use
	seed       maphash.Seed
	done       chan struct{}
	ready      atomic.Bool
	client     mqtt.Client

	why    atomic.Pointer[string] // the last failed attempt's reason; nil once connected
	whyMu  sync.Mutex             // guards logged
	logged string                 // the reason logged last, "" once connected

	published chan published // publishes to confirm, bounded

	mu      sync.Mutex // guards filters and stale; held while (un)subscribing so changes apply in order
	filters []string   // what the broker should be sending, from the rules
	stale   []string   // what the broker may still hold and should not
}

type work struct {
	ev  event.Event
	msg mqtt.Message
}

// reconnectEvery is the longest alertd waits between two attempts to
// reach the broker.
const reconnectEvery = time.Second

// queueDepth per worker: enough to ride out an fsync, small enough that a
// stalled store pushes back on the broker instead of growing memory:
// 128 workers × 64 is 8,192 readings held at most, as 32 × 256 were.
const queueDepth = 64

// workerIdle is how long a shard's worker waits for a message before it
// exits; the next message of the shard starts one again. An idle alertd
// keeps no worker goroutines (128 of them held about 1 MiB of stacks), a
// busy one keeps each for as long as readings come.
var workerIdle = time.Minute

// New returns a subscriber that passes events to h.
func New(opts Options, h Handler) *Subscriber {
	if opts.Workers <= 0 {
		opts.Workers = 128
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Connected == nil {
		opts.Connected = func(bool) {}
	}
	if opts.Held == nil {
		opts.Held = func([]string) {}
	}
	s := &Subscriber{opts: opts, handler: h, log: opts.Log, seed: maphash.MakeSeed(), done: make(chan struct{}),
		filters: slices.Clone(opts.Filters), published: make(chan published, 256)}
	for _, f := range opts.Stale {
		if !slices.Contains(s.filters, f) && !slices.Contains(s.stale, f) {
			s.stale = append(s.stale, f)
		}
	}
	s.client = mqtt.NewClient(s.clientOptions())
	for range opts.Workers {
		s.shards = append(s.shards, make(chan work, queueDepth))
	}
	s.pending = make([]atomic.Int32, opts.Workers)
	s.running = make([]atomic.Bool, opts.Workers)
	s.quick, _ = h.(Quick)
	return s
}

// Publish sends a retained QoS 1 message on the same connection, without
// waiting for the broker's acknowledgement (paho resends it after a
// reconnect). It never blocks the caller.
func (s *Subscriber) Publish(topic string, payload []byte) {
	tok := s.client.Publish(topic, 1, true, payload)
	select {
	case s.published <- published{topic, tok}:
	default:
		// Too many unconfirmed: paho still sends it; only its error
		// would go unlogged.
	}
}

// published is a publish whose outcome is still to be logged.
type published struct {
	topic string
	tok   mqtt.Token
}

// confirm logs publishes the broker refused, one at a time: one goroutine,
// owned by Run, however many publishes there are.
func (s *Subscriber) confirm() {
	for {
		select {
		case p := <-s.published:
			if p.tok.WaitTimeout(30*time.Second) && p.tok.Error() != nil {
				s.log.Warn("mqtt publish", "topic", p.topic, "err", p.tok.Error())
			}
		case <-s.done:
			return
		}
	}
}

// Ready reports whether the subscriber is connected and subscribed.
func (s *Subscriber) Ready() bool { return s.ready.Load() }

// Run connects and delivers events until ctx is done, then disconnects and
// lets the workers finish what they hold.
func (s *Subscriber) Run(ctx context.Context) error {
	client := s.client
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.confirm() }()
	tok := client.Connect() // with ConnectRetry it completes only once connected
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			s.log.Error("mqtt connect", "broker", s.opts.Broker, "err", err)
		}
	case <-ctx.Done():
	}
	<-ctx.Done()
	s.ready.Store(false)
	if s.opts.StatusTopic != "" && client.IsConnectionOpen() {
		// A clean stop sends no will: say it.
		client.Publish(s.opts.StatusTopic, 0, true, StatusOffline).WaitTimeout(time.Second)
	}
	client.Disconnect(250)
	close(s.done)
	s.workersMu.Lock()
	s.stopped = true
	s.workersMu.Unlock()
	s.workers.Wait()
	wg.Wait()
	return nil
}

func (s *Subscriber) clientOptions() *mqtt.ClientOptions {
	o := mqtt.NewClientOptions().
		AddBroker(s.opts.Broker).
		SetClientID(s.opts.ClientID).
		SetUsername(s.opts.Username).
		SetPassword(s.opts.Password).
		SetCleanSession(false).   // the broker queues QoS 1 readings while we are away
		SetOrderMatters(true).    // the handler only enqueues; workers keep per-topic order
		SetAutoAckDisabled(true). // ack after the outbox commit, not before
		SetAutoReconnect(true).   // forever
		SetConnectRetry(true).    // the first connect too: the broker may start after us
		// Every reconnect wait is capped at reconnectEvery. paho grows its
		// backoff across outages that follow each other (it resets only
		// after 2 × ConnectTimeout without a failure), which left alertd
		// blind for 8-13 s after a 2 s outage; a one-second cap bounds the
		// blindness to about a second after the broker is back, whatever
		// came before, at the cost of one connection attempt a second
		// while the broker is down (mosquitto's own clients retry as often).
		SetConnectRetryInterval(reconnectEvery).
		SetMaxReconnectInterval(reconnectEvery).
		SetKeepAlive(30 * time.Second). // a Duration: SetKeepAlive(30) would be 30ns
		SetPingTimeout(10 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).         // paho's default 0 can block forever
		SetCustomOpenConnectionFn(openConnection). // paho's dial, reads buffered
		SetDefaultPublishHandler(s.onMessage).
		SetOnConnectHandler(s.onConnect).
		SetConnectionNotificationHandler(s.onNotification). // why an attempt failed
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			s.ready.Store(false)
			s.opts.Connected(false)
			s.log.Warn("mqtt connection lost; reconnecting", "broker", s.opts.Broker, "err", err)
		})
	if s.opts.TLS != nil {
		o.SetTLSConfig(s.opts.TLS)
	}
	if s.opts.StatusTopic != "" {
		o.SetWill(s.opts.StatusTopic, StatusOffline, 1, true)
	}
	return o
}

// onConnect (re)subscribes. Subscribing is idempotent, so it runs after
// every connect whether or not the broker kept the session.
func (s *Subscriber) onConnect(c mqtt.Client) {
	s.connected()
	s.opts.Connected(true)
	if s.opts.StatusTopic != "" {
		// QoS 0: a QoS 1 publish made here sits in paho's session store,
		// which paho's own resume after the next reconnect modifies while
		// its writer sends it (a data race inside paho 1.5.1). Each connect
		// says it again anyway, and the will covers the other direction.
		c.Publish(s.opts.StatusTopic, 0, true, StatusOnline)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.subscribe(c, s.filters); err != nil {
		s.log.Error("mqtt subscribe failed; will retry on reconnect", "err", err)
		return
	}
	if len(s.stale) > 0 {
		if err := s.unsubscribe(c, s.stale); err != nil {
			s.log.Warn("mqtt: could not unsubscribe filters the rules no longer have; will retry on reconnect", "filters", len(s.stale), "err", err)
		} else {
			s.log.Info("mqtt unsubscribed filters the rules no longer have", "filters", len(s.stale))
			s.stale = nil
		}
	}
	s.opts.Held(s.held())
	s.ready.Store(true)
	s.log.Info("mqtt subscribed", "broker", s.opts.Broker, "filters", len(s.filters))
}

// held is what the broker may hold for the session; s.mu is held.
func (s *Subscriber) held() []string {
	return append(slices.Clone(s.filters), s.stale...)
}

// unsubscribe drops filters on the broker.
func (s *Subscriber) unsubscribe(c mqtt.Client, filters []string) error {
	tok := c.Unsubscribe(filters...)
	if !tok.WaitTimeout(subscribeTimeout) {
		return fmt.Errorf("unsubscribe %d filters: no answer from the broker", len(filters))
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("unsubscribe: %w", err)
	}
	return nil
}

// SetFilters changes what the broker is asked for while alertd runs (a
// reload changed the rules): new filters are subscribed and dropped ones
// unsubscribed on the live connection, without a reconnect. When alertd
// is not connected, the next connect subscribes the new set.
func (s *Subscriber) SetFilters(filters []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var added, dropped []string
	for _, f := range filters {
		if !slices.Contains(s.filters, f) {
			added = append(added, f)
		}
	}
	for _, f := range s.filters {
		if !slices.Contains(filters, f) {
			dropped = append(dropped, f)
		}
	}
	s.filters = slices.Clone(filters)
	s.stale = slices.DeleteFunc(s.stale, func(f string) bool { return slices.Contains(filters, f) })
	if !s.client.IsConnectionOpen() {
		// The next connect subscribes the new set and drops the others.
		for _, f := range dropped {
			if !slices.Contains(s.stale, f) {
				s.stale = append(s.stale, f)
			}
		}
		s.opts.Held(s.held())
		return nil
	}
	if err := s.subscribe(s.client, added); err != nil {
		return err
	}
	if len(dropped) > 0 {
		if err := s.unsubscribe(s.client, dropped); err != nil {
			s.stale = append(s.stale, dropped...)
			s.opts.Held(s.held())
			return err
		}
	}
	s.opts.Held(s.held())
	if len(added)+len(dropped) > 0 {
		s.log.Info("mqtt subscriptions follow the rules", "subscribed", len(added), "unsubscribed", len(dropped), "filters", len(s.filters))
	}
	return nil
}

// subscribeTimeout bounds the wait for a SUBACK or UNSUBACK.
const subscribeTimeout = 30 * time.Second

// subscribe asks for filters in small SUBSCRIBE packets (strict brokers
// limit their size).
func (s *Subscriber) subscribe(c mqtt.Client, filters []string) error {
	const chunk = 100
	for len(filters) > 0 {
		n := min(chunk, len(filters))
		subs := map[string]byte{}
		for _, f := range filters[:n] {
			subs[f] = s.opts.QoS
		}
		filters = filters[n:]
		// A nil callback adds no route: every message reaches the default
		// handler exactly once, even where filters overlap.
		tok := c.SubscribeMultiple(subs, nil)
		if !tok.WaitTimeout(subscribeTimeout) {
			return errors.New("subscribe: no answer from the broker")
		}
		if err := tok.Error(); err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		if st, ok := tok.(*mqtt.SubscribeToken); ok {
			for f, code := range st.Result() {
				if code == 0x80 {
					s.log.Error("broker refused subscription (check its ACL)", "filter", f)
				}
			}
		}
	}
	return nil
}

// onMessage runs on paho's router goroutine (one, in order: OrderMatters)
// and must not block on the store. A message the handler can finish at
// once (Quick) is finished here, when its shard has nothing in flight;
// the rest are handed to the shard's worker. Most readings of a calm
// fleet change nothing, and the hand-off (a channel send and a goroutine
// wake-up per message) cost more than their rules.
func (s *Subscriber) onMessage(_ mqtt.Client, m mqtt.Message) {
	ev := event.Event{
		Source: "mqtt", Topic: m.Topic(), Payload: m.Payload(),
		Received: time.Now(), Retained: m.Retained(),
	}
	i := maphash.String(s.seed, ev.Topic) % uint64(len(s.shards))
	if s.quick != nil && s.pending[i].Load() == 0 && s.tryQuick(&ev) {
		m.Ack()
		return
	}
	s.pending[i].Add(1) // before the worker is looked for: see work
	s.startWorker(i)
	select {
	case s.shards[i] <- work{ev: ev, msg: m}:
	case <-s.done:
		s.pending[i].Add(-1)
	}
}

// tryQuick offers ev to the handler's Quick in the receiving goroutine's
// reused event (a fresh one in the unlikely case that paho runs two
// receiving goroutines across a reconnect).
func (s *Subscriber) tryQuick(ev *event.Event) bool {
	if !s.routedBusy.CompareAndSwap(false, true) {
		fresh := *ev
		return s.quick.Quick(&fresh)
	}
	defer s.routedBusy.Store(false)
	s.routed = *ev
	return s.quick.Quick(&s.routed)
}

// startWorker starts shard i's worker unless it runs (or Run is
// stopping: the message then stays unacknowledged, for the broker to
// deliver again).
func (s *Subscriber) startWorker(i uint64) {
	if s.running[i].Load() || !s.running[i].CompareAndSwap(false, true) {
		return
	}
	s.workersMu.Lock()
	defer s.workersMu.Unlock()
	if s.stopped {
		s.running[i].Store(false)
		return
	}
	s.workers.Add(1)
	go func() { defer s.workers.Done(); s.work(i) }()
}

// work handles shard i's messages in order until it has none for
// workerIdle. Exiting is safe against a message arriving meanwhile: the
// sender counts it in pending before it looks for a running worker, and
// the worker says it stopped before it looks at pending, so either the
// worker sees the message and goes on, or the sender sees no worker and
// starts one (and only one runs: the one that wins running).
func (s *Subscriber) work(i uint64) {
	ch, pending := s.shards[i], &s.pending[i]
	ev := new(event.Event) // this worker's, reused: see Handler
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		select {
		case w := <-ch:
			*ev = w.ev
			s.handle(ev, w.msg)
			pending.Add(-1)
			idle.Reset(workerIdle)
		case <-idle.C:
			if s.retire(i) {
				return
			}
			idle.Reset(workerIdle)
		case <-s.done:
			for {
				select {
				case w := <-ch:
					*ev = w.ev
					s.handle(ev, w.msg)
					pending.Add(-1)
				default:
					return
				}
			}
		}
	}
}

// retire tells whether shard i's idle worker may exit: it says it stopped,
// then exits only if no message is counted for the shard, or if a sender
// has started another worker meanwhile.
func (s *Subscriber) retire(i uint64) bool {
	s.running[i].Store(false)
	return s.pending[i].Load() == 0 || !s.running[i].CompareAndSwap(false, true)
}

// handle runs the handler until it succeeds, then acknowledges the
// message. A failing store is retried with backoff for as long as it
// fails, holding this worker (and so, through paho's in-order delivery,
// the broker) back instead of dropping readings; at shutdown the message
// is left unacknowledged and the broker delivers it again to the next
// session.
func (s *Subscriber) handle(ev *event.Event, msg mqtt.Message) {
	delay := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := s.handler.Handle(ev)
		if err == nil {
			msg.Ack()
			return
		}
		if attempt == 1 || attempt%20 == 0 {
			s.log.Error("cannot store what this message causes; retrying, not acknowledged", "topic", ev.Topic, "attempt", attempt, "err", err)
		}
		select {
		case <-time.After(delay):
			delay = min(delay*2, 5*time.Second)
		case <-s.done:
			return
		}
	}
}

// String describes the subscriber for logs, without credentials.
func (s *Subscriber) String() string {
	return fmt.Sprintf("mqtt %s as %s", s.opts.Broker, s.opts.ClientID)
}
