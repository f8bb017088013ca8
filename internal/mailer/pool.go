package mailer

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrPoolShut is what Send returns once Shutdown was called.
var ErrPoolShut = errors.New("mailer: the smtp session pool is shut down")

// Pool is at most n SMTP sessions shared by every Deliverer of one
// instance (in cluster mode, one Deliverer per owned partition), so that
// the instance never holds more connections to the server than
// smtp.max_connections, however many partitions it owns: providers such
// as Gmail and Microsoft 365 limit concurrent connections.
//
// A session is created on first need, when every existing one is busy
// and fewer than n exist; when n are busy, Send waits, first come first
// served, for one to be returned. The most recently returned session is
// lent first, so the others go idle and are let go. A session left free
// for linger is closed by the pool itself (DefaultLinger, as Postfix's
// smtp_connection_cache_time_limit); the next mail dials again. A session
// being closed counts until its QUIT is answered: never more than n
// connections at once.
//
// Ordering: a Deliverer that has the Pool as its only Transport (Parallel
// nil) sends one mail at a time, so its own mails still arrive in the
// order it sends them, whichever session carries each. Several Deliverers
// share the n sessions: their mails interleave, and one may wait while
// the others use all n. (A Deliverer that lists the Pool in Parallel too
// sends up to that many of its mails at once over the pool, out of order,
// as with Parallel sessions of its own.)
//
// Close, which a Deliverer calls when its own queue goes idle, does not
// close the shared sessions from under the other Deliverers: it closes
// only the sessions that are free and have been idle for at least linger
// (those the pool is about to close anyway), never one in use or one
// returned more recently. Shutdown closes every session, once the sends
// in flight have returned theirs.
//
// A Pool is safe for concurrent use.
type Pool struct {
	newSession func() Transport
	linger     time.Duration

	// slots holds a token for each session lent to a Send or being
	// closed by a timer or Close: at most n.
	// Goroutines blocked sending on a channel are served in order, so a
	// waiting Deliverer is not overtaken forever.
	slots chan struct{}
	shut  chan struct{} // closed by Shutdown: waiting Sends give up

	mu      sync.Mutex
	free    []*pooled // idle sessions, the most recently returned last
	busy    int       // sessions lent to a Send
	closed  bool      // Shutdown was called
	drained chan struct{}
	errs    []error // from closing sessions, returned by Shutdown

	// closing counts the sessions being closed (by a timer, Close,
	// Shutdown, or a Send returning its session after Shutdown):
	// Shutdown waits for them, so no goroutine outlives it.
	closing sync.WaitGroup
}

// pooled is one session and, while it is free, the timer that closes it.
type pooled struct {
	t     Transport
	since time.Time // returned at
	timer *time.Timer
	gen   uint64 // incremented at each lending, so a stale timer does nothing
}

var _ Transport = (*Pool)(nil)

// NewPool returns a pool of at most n (at least 1) sessions made by
// newSession when needed, each closed after linger unused (0: as soon as
// it is returned). newSession must return at once, with a session that
// connects on its first Send (NewSMTPTransport's do): it is called with
// the pool's lock held.
func NewPool(n int, newSession func() Transport, linger time.Duration) *Pool {
	return &Pool{
		newSession: newSession,
		linger:     max(linger, 0),
		slots:      make(chan struct{}, max(n, 1)),
		shut:       make(chan struct{}),
	}
}

// Send sends msg over a free session, or a new one if fewer than n exist,
// waiting for one to be returned when all n are busy. If ctx ends first
// it returns ctx's error and nothing is sent; after Shutdown, ErrPoolShut.
func (p *Pool) Send(ctx context.Context, env Envelope, msg []byte) (Outcome, error) {
	if err := ctx.Err(); err != nil {
		return Outcome{}, err
	}
	select {
	case <-p.shut:
		return Outcome{}, ErrPoolShut
	default:
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	case <-p.shut:
		return Outcome{}, ErrPoolShut
	}
	s, err := p.borrow()
	if err != nil {
		<-p.slots
		return Outcome{}, err
	}
	out, err := s.t.Send(ctx, env, msg)
	p.giveBack(s)
	<-p.slots // after the session is free: the next holder of the slot finds it
	return out, err
}

// borrow lends the most recently returned free session, or a new one.
// The caller holds a slot.
func (p *Pool) borrow() (*pooled, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrPoolShut
	}
	p.busy++
	if k := len(p.free); k > 0 {
		s := p.free[k-1]
		p.free[k-1] = nil
		p.free = p.free[:k-1]
		s.timer.Stop() // if it fired already, gen tells it the session is lent
		s.timer = nil
		s.gen++
		return s, nil
	}
	// Sessions are free, lent (each holding a slot) or being closed
	// (holding one too); none is free, so with this one at most n exist.
	return &pooled{t: p.newSession()}, nil
}

// giveBack makes s free again, to be closed after linger unless lent
// before; after Shutdown it closes s.
func (p *Pool) giveBack(s *pooled) {
	p.mu.Lock()
	p.busy--
	if p.closed {
		p.closing.Add(1)
		if p.busy == 0 && p.drained != nil {
			close(p.drained)
			p.drained = nil
		}
		p.mu.Unlock()
		p.closeSession(s)
		p.closing.Done()
		return
	}
	s.since = time.Now()
	gen := s.gen
	s.timer = time.AfterFunc(p.linger, func() { p.expire(s, gen) })
	p.free = append(p.free, s)
	p.mu.Unlock()
}

// expire closes s if it is still free since the timer was set.
func (p *Pool) expire(s *pooled, gen uint64) {
	// The session keeps a slot until its QUIT is answered, so that no new
	// one is dialled meanwhile: never more than n connections at once.
	if !p.trySlot() {
		// Every slot is taken: a Send is about to borrow a free session,
		// maybe this one. Look again later.
		p.mu.Lock()
		if !p.closed && s.gen == gen && s.timer != nil {
			s.timer = time.AfterFunc(max(p.linger, 10*time.Millisecond), func() { p.expire(s, gen) })
		}
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	if p.closed || s.gen != gen || !p.take(s) {
		p.mu.Unlock()
		<-p.slots
		return
	}
	p.closeTaken(s)
}

// closeTaken closes s, taken off the free list with p.mu held (which it
// releases), and gives back the slot it held until its QUIT was answered.
func (p *Pool) closeTaken(s *pooled) {
	p.closing.Add(1)
	p.mu.Unlock()
	p.closeSession(s)
	<-p.slots
	p.closing.Done()
}

// trySlot takes a slot if one is free at once.
func (p *Pool) trySlot() bool {
	select {
	case p.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// take removes s from the free sessions; p.mu is held.
func (p *Pool) take(s *pooled) bool {
	for i, f := range p.free {
		if f == s {
			p.free = append(p.free[:i], p.free[i+1:]...)
			if s.timer != nil {
				s.timer.Stop()
				s.timer = nil
			}
			s.gen++
			return true
		}
	}
	return false
}

// closeSession ends s (QUIT). The caller incremented p.closing for it,
// and marks it done after.
func (p *Pool) closeSession(s *pooled) {
	if err := s.t.Close(); err != nil {
		p.mu.Lock()
		p.errs = append(p.errs, err)
		p.mu.Unlock()
	}
}

// Close closes the sessions that are free and have been idle for at least
// linger, and no other: the Deliverer that calls it when its own queue
// goes idle must not take sessions from the other Deliverers, in use or
// about to be reused. The pool closes idle sessions by itself after
// linger; Close only does it without waiting for the timer. It returns
// nil: errors from closing a session are Shutdown's to report.
func (p *Pool) Close() error {
	for {
		// As when a timer closes it: the session keeps its slot until
		// its QUIT is answered. No slot free: every session is in use or
		// about to be.
		if !p.trySlot() {
			return nil
		}
		p.mu.Lock()
		var stale *pooled
		for _, s := range p.free {
			if time.Since(s.since) >= p.linger {
				stale = s
				break
			}
		}
		if p.closed || stale == nil {
			p.mu.Unlock()
			<-p.slots
			return nil
		}
		p.take(stale)
		p.closeTaken(stale)
	}
}

// Shutdown closes every session: the free ones at once, the ones in use
// when their Send returns (it waits for that, as long as the sends' own
// timeouts allow). Sends waiting for a session, and every Send after,
// return ErrPoolShut. Calls after the first return nil at once, without
// waiting for the first to be done.
func (p *Pool) Shutdown() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.shut)
	free := p.free
	p.free = nil
	for _, s := range free {
		s.timer.Stop() // a timer that fired already sees closed and returns
		s.timer = nil
		s.gen++
	}
	p.closing.Add(len(free))
	var drained chan struct{}
	if p.busy > 0 {
		drained = make(chan struct{})
		p.drained = drained
	}
	p.mu.Unlock()
	for _, s := range free {
		p.closeSession(s)
		p.closing.Done()
	}
	if drained != nil {
		<-drained
	}
	p.closing.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return errors.Join(p.errs...)
}
