// Package broker runs the embedded MQTT broker (mochi-mqtt) that alertd
// starts when no external broker is configured, so a fresh machine can
// publish readings and get mail with nothing else installed. It accepts
// anonymous clients and keeps its sessions in memory only: for a fleet,
// run Mosquitto and point mqtt.broker at it.
package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// allowAll lets every client connect, publish and subscribe. It replaces
// mochi's auth.AllowHook, whose package would pull in the archived
// gopkg.in/yaml.v3 for its ledger.
type allowAll struct{ mochi.HookBase }

func (h *allowAll) ID() string { return "allow-all" }

func (h *allowAll) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

func (h *allowAll) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

func (h *allowAll) OnACLCheck(*mochi.Client, string, bool) bool { return true }

// Broker is a running embedded broker.
type Broker struct {
	srv  *mochi.Server
	addr net.Addr

	closeOnce sync.Once
	closeErr  error
}

// Start listens on addr ("127.0.0.1:18830", or ":0" in tests) and serves.
func Start(addr string, log *slog.Logger) (*Broker, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: listen on %s: %w (set mqtt.listen to a free port, or mqtt.broker to use an existing broker)", addr, err)
	}
	// mochi logs every start, stop and client at info; alertd's own log
	// says what matters, so only its warnings and errors pass.
	quiet := slog.New(minLevel{log.Handler(), slog.LevelWarn})
	srv := mochi.New(&mochi.Options{Logger: quiet, InlineClient: true})
	// mochi denies everyone without an auth hook.
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		ln.Close()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if err := srv.AddListener(listeners.NewNet("alertd", ln)); err != nil {
		ln.Close()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	return &Broker{srv: srv, addr: ln.Addr()}, nil
}

// URL is the address clients use, e.g. tcp://127.0.0.1:18830.
func (b *Broker) URL() string { return "tcp://" + b.addr.String() }

// Publish injects a message as if a client had published it.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	return b.srv.Publish(topic, payload, retain, qos)
}

// Close stops the broker and disconnects its clients. It may be called
// more than once (mochi's own Close panics on a second call).
func (b *Broker) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.srv.Close() })
	return b.closeErr
}

// minLevel drops records below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

// Handle drops mochi's report of a client connection that ended while
// it was reading (the client left, or the broker is closing): that is how
// every connection ends, not a warning.
func (h minLevel) Handle(ctx context.Context, r slog.Record) error {
	routine := false
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && (errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)) {
			routine = true
			return false
		}
		return true
	})
	if routine {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }
