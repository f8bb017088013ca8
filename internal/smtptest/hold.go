package smtptest

import (
	"slices"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// hold is one HoldData period.
type hold struct {
	done chan struct{} // closed by release
	err  error         // the reply for every held DATA; set before done closes
	msgs []Message     // held now
}

// errReleased answers DATAs still held when the test or the server ends.
var errReleased = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "smtptest: held DATA released at the end of the test"}

// HoldData makes every DATA from now on wait, after the whole message was
// received and before the reply to the final dot, until release is
// called: a server that stalls in DATA, or a client that crashes or times
// out while its mail sits on the server. Held returns the mails waiting.
//
// release(nil) accepts every held mail (it joins Messages even if its
// client has hung up meanwhile, as a real server that got the dot would);
// release(err) answers err instead (an *smtp.SMTPError picks the code,
// go-smtp answers any other error 554; Fail scripts are not consulted for
// held mails). Either way the hold ends:
// later DATAs are answered at once. release may be called from any
// goroutine; calls after the first do nothing. Mails still held when the
// test ends are answered 451.
func (s *Server) HoldData(t testing.TB) (release func(err error)) {
	h := &hold{done: make(chan struct{})}
	s.mu.Lock()
	s.hold = h
	s.mu.Unlock()
	release = func(err error) { s.release(h, err) }
	t.Cleanup(func() { release(errReleased) })
	return release
}

func (s *Server) release(h *hold, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-h.done:
		return
	default:
	}
	h.err = err
	close(h.done)
	if s.hold == h {
		s.hold = nil
	}
}

// Held returns the mails waiting in a held DATA, oldest first.
func (s *Server) Held() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		return nil
	}
	return slices.Clone(s.hold.msgs)
}

// SetDataDelay makes the server wait d after each complete message before
// it answers the final dot (a slow server); 0 answers at once.
func (s *Server) SetDataDelay(d time.Duration) {
	s.mu.Lock()
	s.dataDelay = d
	s.mu.Unlock()
}

// waitHold holds m if a hold is active: it returns whether m was held
// and, if so, the reply the release chose.
func (s *Server) waitHold(m Message) (held bool, err error) {
	s.mu.Lock()
	h := s.hold
	if h == nil {
		s.mu.Unlock()
		return false, nil
	}
	h.msgs = append(h.msgs, m)
	s.mu.Unlock()
	select {
	case <-h.done:
	case <-s.closing:
		s.release(h, errReleased)
	}
	// h.err was set before done closed; the hold is over, so h.msgs is
	// no longer shown by Held.
	return true, h.err
}

// delayData waits the configured DATA delay, or until the server closes.
func (s *Server) delayData() {
	s.mu.Lock()
	d := s.dataDelay
	s.mu.Unlock()
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-s.closing:
	}
}
