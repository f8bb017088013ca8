package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/alertd/alertd/internal/cluster/natstest"
)

// newTestOutbox opens an Outbox on its own connection, as one instance
// would, with a 1 s AckWait so redeliveries come quickly.
func newTestOutbox(t *testing.T, c *natstest.Cluster) (*Outbox, *nats.Conn) {
	t.Helper()
	nc, js := connect(t, c)
	log, _ := testLogger(t)
	o, err := NewOutbox(context.Background(), OutboxConfig{JS: js, Replicas: 1, AckWait: time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return o, nc
}

// runDeliver runs o.Deliver with send until the test ends.
func runDeliver(t *testing.T, o *Outbox, send func(context.Context, Mail) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = o.Deliver(ctx, send) }()
	t.Cleanup(func() { cancel(); <-done })
}

// A retried enqueue of one Message-ID, as after a publish timeout or a
// partition takeover redelivering the reading, stores the mail once.
func TestOutboxDedupesByMessageID(t *testing.T) {
	c := natstest.Start(t, 1)
	o, _ := newTestOutbox(t, c)
	ctx := context.Background()
	for k, id := range []string{"<a@x>", "<a@x>", "<b@x>"} {
		dup, err := o.Enqueue(ctx, id, []byte("mail "+id))
		if err != nil {
			t.Fatal(err)
		}
		if want := k == 1; dup != want {
			t.Errorf("enqueue %d (%s): duplicate %v, want %v", k, id, dup, want)
		}
	}
	s, _ := o.js.Stream(ctx, o.names.outbox())
	if n := s.CachedInfo().State.Msgs; n != 2 {
		t.Errorf("outbox holds %d mails, want 2", n)
	}
}

// An instance that dies during a send (its connection closes before the
// ack) leaves the mail to another, which sends the same bytes under the
// same Message-ID. A temporary error retries; a permanent one removes it.
func TestOutboxRedeliversAfterCrash(t *testing.T) {
	c := natstest.Start(t, 1)
	a, aConn := newTestOutbox(t, c)
	b, _ := newTestOutbox(t, c)
	ctx := context.Background()

	inA := make(chan Mail, 1)
	release := make(chan struct{})
	runDeliver(t, a, func(ctx context.Context, m Mail) error {
		inA <- m
		<-release // the SMTP exchange is under way when the process dies
		return nil
	})
	if _, err := a.Enqueue(ctx, "<crash@x>", []byte("crash mail")); err != nil {
		t.Fatal(err)
	}
	first := <-inA
	aConn.Close()
	close(release)

	got := make(chan Mail, 4)
	tries := map[string]int{}
	runDeliver(t, b, func(ctx context.Context, m Mail) error {
		got <- m
		tries[m.MessageID]++
		switch {
		case m.MessageID == "<temp@x>" && tries[m.MessageID] == 1:
			return errors.New("451 try again later")
		case m.MessageID == "<perm@x>":
			return fmt.Errorf("550 no such user: %w", ErrPermanent)
		}
		return nil
	})
	select {
	case m := <-got:
		if m.MessageID != first.MessageID || string(m.Raw) != string(first.Raw) || m.Deliveries < 2 {
			t.Errorf("redelivered %+v, want the same mail as %+v, a later delivery", m, first)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the crashed instance's mail was not redelivered")
	}

	for _, id := range []string{"<temp@x>", "<perm@x>"} {
		if _, err := b.Enqueue(ctx, id, []byte(id)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	deadline := time.After(30 * time.Second) // a CI run under load once saw neither within 10 s
	for seen["<temp@x>"] < 2 || seen["<perm@x>"] < 1 {
		select {
		case m := <-got:
			seen[m.MessageID]++
		case <-deadline:
			t.Fatalf("deliveries seen: %v; want the temporary failure retried", seen)
		}
	}
	// The permanent failure is not retried, and the outbox empties.
	s, _ := b.js.Stream(ctx, b.names.outbox())
	eventually(t, 5*time.Second, "outbox empty", func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	select {
	case m := <-got:
		t.Errorf("unexpected delivery %+v", m)
	case <-time.After(1500 * time.Millisecond): // past the 1 s AckWait
	}
}

func TestRetryDelay(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {4, 8 * time.Second}, {20, 5 * time.Minute}} {
		if got := retryDelay(tc.n); got != tc.want {
			t.Errorf("retryDelay(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}
