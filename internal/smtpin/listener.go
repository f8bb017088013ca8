package smtpin

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// listener admits connections before go-smtp greets them: go-smtp's
// Backend is first asked at HELO, after its own "220" greeting, which is
// too late to refuse a client outside the networks. Refused clients are
// answered here; admitted ones become clients, counted against MaxConns
// (go-smtp has no such limit) and tracked so Close can end them.
type listener struct {
	net.Listener
	srv     *Server
	slots   chan struct{} // one per admitted connection
	spare   chan struct{} // bounds connections lingering to hear a refusal
	changed chan struct{} // a connection ended

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	shut  bool
}

// refuseLinger is how long a refused client may stay to send QUIT, as RFC
// 5321 §3.1 wants after a 554 greeting, before alertd hangs up anyway.
const refuseLinger = 5 * time.Second

func newListener(l net.Listener, s *Server) *listener {
	return &listener{Listener: l, srv: s, conns: map[net.Conn]struct{}{},
		slots: make(chan struct{}, s.opts.MaxConns), spare: make(chan struct{}, s.opts.MaxConns),
		changed: make(chan struct{}, 1)}
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(nc)
		if !l.srv.pol.allowed(ip) {
			l.refuse(nc, ip, RelayDenied, "client outside networks",
				"554 5.7.1 "+l.srv.opts.Hostname+" does not accept mail from "+ip.String())
			continue
		}
		select {
		case l.slots <- struct{}{}:
		default:
			l.refuse(nc, ip, RateLimited, "too many connections",
				"421 4.7.0 "+l.srv.opts.Hostname+" too many connections, try again later")
			continue
		}
		c := newClient(nc, ip, l.srv)
		if !l.track(c) { // closing
			<-l.slots
			nc.Close()
			continue
		}
		return c, nil
	}
}

func remoteIP(nc net.Conn) netip.Addr {
	ap, err := netip.ParseAddrPort(nc.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// track remembers an open connection; false once the listener is closed.
func (l *listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shut {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

// forget drops a closed connection and frees its slot.
func (l *listener) forget(c net.Conn, slot bool) {
	l.mu.Lock()
	_, ok := l.conns[c]
	delete(l.conns, c)
	l.mu.Unlock()
	if ok && slot {
		<-l.slots
	}
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// wait returns when no connection is left, or when ctx ends.
func (l *listener) wait(ctx context.Context) {
	for {
		l.mu.Lock()
		n := len(l.conns)
		l.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-l.changed:
		case <-ctx.Done():
			return
		}
	}
}

// closeAll ends every connection, admitted or lingering, and admits no
// more.
func (l *listener) closeAll() {
	l.mu.Lock()
	l.shut = true
	conns := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// refuse answers a client alertd does not serve, on a goroutine of its
// own so the accept loop goes on. A 421 hangs up at once; after a 554 the
// client may stay refuseLinger to QUIT. Past MaxConns lingering clients,
// a refused client is simply disconnected.
func (l *listener) refuse(nc net.Conn, ip netip.Addr, r Result, reason, reply string) {
	l.srv.logRefusal(l.srv.opts.Log.With(keyClient, ip.String()), r, reason, reply)
	select {
	case l.spare <- struct{}{}:
	default:
		nc.Close()
		return
	}
	if !l.srv.enter() {
		<-l.spare
		nc.Close()
		return
	}
	if !l.track(nc) {
		l.srv.leave()
		<-l.spare
		nc.Close()
		return
	}
	go func() {
		defer l.srv.leave()
		defer func() { <-l.spare }()
		linger(nc, reply)
		l.forget(nc, false)
	}()
}

// linger writes the refusal and, after a 554, answers QUIT with 221 and
// anything else with 503 until the client leaves or time is up.
func linger(nc net.Conn, reply string) {
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(refuseLinger))
	if _, err := nc.Write([]byte(reply + "\r\n")); err != nil || !strings.HasPrefix(reply, "554") {
		return
	}
	br := bufio.NewReaderSize(nc, 512)
	for range 5 {
		line, err := br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
		if strings.EqualFold(strings.TrimSpace(string(line)), "QUIT") {
			nc.Write([]byte("221 2.0.0 bye\r\n"))
			return
		}
		nc.Write([]byte("503 5.5.1 no service here, send QUIT\r\n"))
	}
}
