package broker

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Close may be called twice (a deferred Close after an explicit one).
func TestCloseTwice(t *testing.T) {
	b, err := Start("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
}

// Closing the broker under a connected client, or a client leaving, is how
// connections end: nothing is logged as a warning.
func TestCloseWithAClientLogsNoWarning(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	h := slog.NewTextHandler(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) }), nil)
	b, err := Start("127.0.0.1:0", slog.New(h))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		c, err := net.Dial("tcp", strings.TrimPrefix(b.URL(), "tcp://"))
		if err != nil {
			t.Fatal(err)
		}
		// CONNECT, MQTT 3.1.1, clean session, client id "t0" … "t4": one
		// id for all would be a takeover, whose replaced connection the
		// broker may leave to its keepalive (45 s) under load.
		if _, err := c.Write([]byte{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 2, 't', '0' + byte(i)}); err != nil {
			t.Fatal(err)
		}
		ack := make([]byte, 4)
		if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 {
			t.Fatalf("CONNACK %x, %v", ack, err)
		}
		defer c.Close()
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(buf.String(), "level=WARN") || strings.Contains(buf.String(), "level=ERROR") {
		t.Errorf("logged:\n%s", buf.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
