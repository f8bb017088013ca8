package broker

import (
	"log/slog"
	"testing"
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
