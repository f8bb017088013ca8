package mailer

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/smtptest"
)

// pool is a Pool of n sessions to srv (no TLS), shut down when the test
// ends.
func pool(t *testing.T, srv *smtptest.Server, n int, linger time.Duration) *Pool {
	t.Helper()
	logs := &syncBuffer{}
	p := NewPool(n, func() Transport {
		return NewSMTPTransport(SMTPOptions{Host: "127.0.0.1", Port: srv.Port, Security: SecurityNone,
			Timeout: 5 * time.Second, Helo: "alertd.test"}, debugLogger(logs))
	}, linger)
	t.Cleanup(func() { _ = p.Shutdown() })
	return p
}

// poolSend sends the test mail from from to ops@example.org.
func poolSend(t *testing.T, ctx context.Context, p *Pool, from string) error {
	t.Helper()
	_, err := p.Send(ctx, Envelope{From: from, To: []string{"ops@example.org"}}, message(t, "ops@example.org"))
	return err
}

// sendAsync sends in a goroutine; the channel receives Send's error.
func sendAsync(t *testing.T, ctx context.Context, p *Pool, from string) <-chan error {
	t.Helper()
	msg := message(t, "ops@example.org")
	done := make(chan error, 1)
	go func() {
		_, err := p.Send(ctx, Envelope{From: from, To: []string{"ops@example.org"}}, msg)
		done <- err
	}()
	return done
}

// within waits for ch for at most d.
func within[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s: not done within %s", what, d)
	}
	var zero T
	return zero
}

func sentFrom(msgs []smtptest.Message, from string) int {
	n := 0
	for _, m := range msgs {
		if m.From == from {
			n++
		}
	}
	return n
}

// Six Deliverers (the partitions one instance owns), each over its own
// outbox, share a Pool of 2: every mail arrives exactly once, each
// Deliverer's mails in the order they were queued, and the server never
// has more than 2 connections from the instance open at once.
func TestPoolBoundsConnectionsOfSeveralDeliverers(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDataDelay(10 * time.Millisecond) // slow enough for the sends to overlap
	p := pool(t, srv, 2, DefaultLinger)
	const partitions, each = 6, 10
	var ds []*delivery
	want := map[string][]string{} // recipient → Message-IDs in queue order
	for i := range partitions {
		d := startDelivererN(t, srv, SMTPOptions{Security: SecurityNone}, fastRetry, 1, func(dl *Deliverer) {
			// The pool is the only transport (the one startDelivererN
			// made is left unused, never connected), and the queue lets
			// go at once when idle: Close is called while others send.
			dl.Transport, dl.Parallel, dl.Linger = p, nil, 0
		})
		ds = append(ds, d)
		rcpt := fmt.Sprintf("ops%d@example.org", i)
		for range each {
			e := d.enqueue(t, time.Now(), rcpt)
			want[rcpt] = append(want[rcpt], e.MessageID)
		}
	}
	srv.WaitMessages(t, partitions*each, 10*time.Second)
	for _, d := range ds {
		d.settle(t, "drained", func(s outbox.Stats) bool { return s.Pending == 0 })
	}

	msgs := srv.Messages()
	seen := map[string]int{}
	got := map[string][]string{}
	for _, m := range msgs {
		id := strings.Trim(m.Header.Get("Message-Id"), "<>")
		seen[id]++
		got[m.To[0]] = append(got[m.To[0]], id)
	}
	if len(msgs) != partitions*each || len(seen) != partitions*each {
		t.Errorf("%d mails, %d distinct, want %d once each", len(msgs), len(seen), partitions*each)
	}
	for rcpt, ids := range want {
		if !slices.Equal(got[rcpt], ids) {
			t.Errorf("%s got %q, want %q in queue order", rcpt, got[rcpt], ids)
		}
	}
	if m := srv.MaxOpen(); m != 2 {
		t.Errorf("at most %d connections open at once, want 2 (the pool's size, all of it used)", m)
	}
}

// Sessions left idle are closed by the pool after linger, not at once and
// not never; the next mail dials again and is delivered.
func TestPoolClosesIdleSessionsAfterLinger(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDataDelay(50 * time.Millisecond)
	p := pool(t, srv, 2, 200*time.Millisecond)
	var sends []<-chan error
	for range 4 {
		sends = append(sends, sendAsync(t, context.Background(), p, user))
	}
	for _, s := range sends {
		if err := within(t, s, 5*time.Second, "burst send"); err != nil {
			t.Fatal(err)
		}
	}
	if o, c := srv.Open(), srv.Conns(); o != 2 || c != 2 {
		t.Fatalf("right after the burst %d of %d sessions open, want both kept open for the next mail", o, c)
	}
	deadline := time.Now().Add(time.Second)
	for srv.Open() != 0 || count(srv.Commands(), "LOGOUT") != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("1 s after the burst %d sessions open, %d ended, want both closed after the 200ms linger; commands %q",
				srv.Open(), count(srv.Commands(), "LOGOUT"), srv.Commands())
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.SetDataDelay(0)
	if err := poolSend(t, context.Background(), p, user); err != nil {
		t.Fatalf("after the idle sessions closed: %v", err)
	}
	if n, c := len(srv.Messages()), srv.Conns(); n != 5 || c != 3 {
		t.Errorf("%d mails over %d connections, want 5 over 3 (a new session for the late mail)", n, c)
	}
}

// counted is a session that counts, in live, the sessions that may hold a
// connection: from its first Send until its Close has returned (QUIT
// answered).
type counted struct {
	Transport
	live, most *atomic.Int32
	open       bool // the pool never uses one session from two goroutines at once
}

func (c *counted) Send(ctx context.Context, env Envelope, msg []byte) (Outcome, error) {
	if !c.open {
		c.open = true
		n := c.live.Add(1)
		for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
		}
	}
	return c.Transport.Send(ctx, env, msg)
}

func (c *counted) Close() error {
	err := c.Transport.Close()
	if c.open {
		c.open = false
		c.live.Add(-1)
	}
	return err
}

// A session the pool is closing still counts until its QUIT is answered:
// a mail that needs a session meanwhile waits instead of dialling one
// more, so a provider's connection limit holds even as sessions come and
// go (a 1ms linger: sessions are closed between the mails).
func TestPoolCountsAClosingSessionUntilItsQuit(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	var live, most atomic.Int32
	p := NewPool(1, func() Transport {
		return &counted{Transport: NewSMTPTransport(SMTPOptions{Host: "127.0.0.1", Port: srv.Port, Security: SecurityNone,
			Timeout: 5 * time.Second, Helo: "alertd.test"}, debugLogger(&syncBuffer{})), live: &live, most: &most}
	}, time.Millisecond)
	t.Cleanup(func() { _ = p.Shutdown() })
	const senders, each = 3, 20
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			for j := range each {
				time.Sleep(time.Duration(1+(i+j)%3) * time.Millisecond)
				if err := poolSend(t, context.Background(), p, user); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	srv.WaitMessages(t, senders*each, 5*time.Second)
	if m := most.Load(); m != 1 {
		t.Errorf("%d sessions connected at once in a pool of 1 (over %d connections)", m, srv.Conns())
	}
	if c := srv.Conns(); c < 2 {
		t.Errorf("%d connections: the test meant sessions to be closed and dialled again between the mails", c)
	}
}

// A Send waiting for a session of a busy pool gives up when its context
// ends, and its mail is never sent.
func TestPoolSendWaitingGivesUpWithItsContext(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	p := pool(t, srv, 1, DefaultLinger)
	release := srv.HoldData(t)
	first := sendAsync(t, context.Background(), p, "first@example.org")
	waitFor(t, func() bool { return len(srv.Held()) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := within(t, sendAsync(t, ctx, p, "late@example.org"), 3*time.Second, "send waiting for a session")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send waiting on a busy pool: %v, want the context's deadline", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("gave up after %s, want about 150ms", el)
	}

	release(nil)
	if err := within(t, first, 5*time.Second, "held send"); err != nil {
		t.Fatal(err)
	}
	// One more over the same session: a late mail queued behind the
	// first would be sent before this one.
	if err := poolSend(t, context.Background(), p, "next@example.org"); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 2 || sentFrom(msgs, "late@example.org") != 0 || count(srv.Commands(), "MAIL <late@") != 0 {
		t.Errorf("mails from %v, commands %q: want first and next, nothing of the late one", senders(msgs), srv.Commands())
	}
}

func senders(msgs []smtptest.Message) []string {
	var s []string
	for _, m := range msgs {
		s = append(s, m.From)
	}
	return s
}

// A Deliverer whose queue goes idle calls Close; that neither waits for,
// nor breaks, another Deliverer's send in flight, nor takes away the
// session the other reuses for its next mail.
func TestPoolCloseLeavesOtherDeliverersSessions(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	p := pool(t, srv, 2, DefaultLinger)
	closeNow := func(what string) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- p.Close() }()
		if err := within(t, done, 500*time.Millisecond, what); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	release := srv.HoldData(t)
	busy := sendAsync(t, context.Background(), p, "busy@example.org")
	waitFor(t, func() bool { return len(srv.Held()) == 1 })
	closeNow("Close while another's send is held in DATA")
	release(nil)
	if err := within(t, busy, 5*time.Second, "held send"); err != nil {
		t.Fatalf("the send in flight during Close: %v", err)
	}
	closeNow("Close right after another's send")
	if err := poolSend(t, context.Background(), p, "busy@example.org"); err != nil {
		t.Fatalf("the next send after Close: %v", err)
	}
	if n := len(srv.WaitMessages(t, 2, 5*time.Second)); n != 2 {
		t.Errorf("%d mails, want 2", n)
	}
	if c, o := srv.Conns(), srv.Open(); c != 1 || o != 1 {
		t.Errorf("%d connections, %d open: want the one session reused and still open after the other's Close", c, o)
	}
}

// Shutdown closes the free sessions at once and the busy one when its
// send returns, waiting for it; that mail is delivered, Send then says
// the pool is shut, and no goroutine is left behind.
func TestPoolShutdownClosesEverySession(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	baseline := runtime.NumGoroutine()
	p := pool(t, srv, 2, time.Minute) // idle sessions stay, their timers pending
	srv.SetDataDelay(50 * time.Millisecond)
	warm := []<-chan error{sendAsync(t, context.Background(), p, user), sendAsync(t, context.Background(), p, user)}
	for _, w := range warm {
		if err := within(t, w, 5*time.Second, "warm-up send"); err != nil {
			t.Fatal(err)
		}
	}
	srv.SetDataDelay(0)
	if o := srv.Open(); o != 2 {
		t.Fatalf("%d sessions open after two sends at once, want 2", o)
	}

	release := srv.HoldData(t)
	inflight := sendAsync(t, context.Background(), p, "inflight@example.org")
	waitFor(t, func() bool { return len(srv.Held()) == 1 })
	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown() }()
	waitFor(t, func() bool { return srv.Open() == 1 }) // the free session, at once
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a send was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := poolSend(t, context.Background(), p, "late@example.org"); !errors.Is(err, ErrPoolShut) {
		t.Errorf("Send during Shutdown: %v, want ErrPoolShut", err)
	}
	release(nil)
	if err := within(t, inflight, 5*time.Second, "send in flight at Shutdown"); err != nil {
		t.Errorf("the send in flight at Shutdown: %v", err)
	}
	if err := within(t, shut, 5*time.Second, "Shutdown"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if msgs := srv.Messages(); len(msgs) != 3 || sentFrom(msgs, "inflight@example.org") != 1 {
		t.Errorf("mails from %v, want the two warm-ups and the one in flight at Shutdown", senders(msgs))
	}
	err := poolSend(t, context.Background(), p, "late@example.org")
	if !errors.Is(err, ErrPoolShut) || !strings.Contains(err.Error(), "shut") {
		t.Errorf("Send after Shutdown: %v, want ErrPoolShut", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for srv.Open() != 0 || count(srv.Commands(), "LOGOUT") != srv.Conns() || runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("after Shutdown %d of %d sessions open, %d ended; %d goroutines, %d before:\n%s",
				srv.Open(), srv.Conns(), count(srv.Commands(), "LOGOUT"), runtime.NumGoroutine(), baseline,
				buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A Send waiting for a session when the pool shuts down returns at once
// with ErrPoolShut, without sending, while Shutdown waits for the send in
// flight.
func TestPoolShutdownWakesWaitingSends(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	p := pool(t, srv, 1, DefaultLinger)
	release := srv.HoldData(t)
	inflight := sendAsync(t, context.Background(), p, "inflight@example.org")
	waitFor(t, func() bool { return len(srv.Held()) == 1 })
	waiting := sendAsync(t, context.Background(), p, "waiting@example.org")
	time.Sleep(50 * time.Millisecond) // let it wait for the session
	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown() }()
	if err := within(t, waiting, time.Second, "send waiting at Shutdown"); !errors.Is(err, ErrPoolShut) {
		t.Errorf("send waiting at Shutdown: %v, want ErrPoolShut", err)
	}
	release(nil)
	if err := within(t, inflight, 5*time.Second, "send in flight at Shutdown"); err != nil {
		t.Errorf("the send in flight at Shutdown: %v", err)
	}
	if err := within(t, shut, 5*time.Second, "Shutdown"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if msgs := srv.Messages(); len(msgs) != 1 || count(srv.Commands(), "MAIL <waiting@") != 0 {
		t.Errorf("mails from %v, commands %q: want the one in flight only", senders(msgs), srv.Commands())
	}
}
