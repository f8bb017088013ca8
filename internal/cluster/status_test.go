package cluster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alertd/alertd/internal/cluster/natstest"
)

// ReadStatus sees from outside what the instances hold: members with their
// start, an owner and a term for every partition, and the stream.
func TestReadStatus(t *testing.T) {
	c := natstest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := Connect(ctx, strings.Split(c.URL(), ","), "", nil, "alertd status test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	_, err = ReadStatus(ctx, js, "")
	if !errors.Is(err, ErrNoStream) || err.Error() != "no alertd has run on this cluster yet: no stream alertd_ingest" {
		t.Fatalf("before any alertd: %v, want ErrNoStream naming alertd_ingest", err)
	}

	cfg := fleetConfig(1)
	cfg.Partitions = 4
	none := func(context.Context, Reading) error { return nil }
	a := startInstance(t, c, cfg, "a", none)
	b := startInstance(t, c, cfg, "b", none)
	eventually(t, 20*time.Second, "a and b share the 4 partitions", func() bool { return balanced(4, a, b) })

	var st Status
	eventually(t, 10*time.Second, "ReadStatus shows both members and an owner for each partition", func() bool {
		if st, err = ReadStatus(ctx, js, "alertd"); err != nil {
			t.Fatal(err)
		}
		for _, ps := range st.Partitions {
			if ps.Owner == "" {
				return false
			}
		}
		return slices.Equal(st.Members, []string{"a", "b"}) && len(st.Partitions) == 4
	})
	for _, ps := range st.Partitions {
		x := a
		if ps.Owner == "b" {
			x = b
		}
		if !slices.Contains(x.Owned(), ps.Partition) || ps.Term == 0 {
			t.Errorf("partition %d: owner %s term %d, but %s owns %v", ps.Partition, ps.Owner, ps.Term, x.Instance(), x.Owned())
		}
	}
	if st.Stream != "alertd_ingest" || st.Started["a"].IsZero() || st.Started["b"].IsZero() || st.Instance != "" {
		t.Errorf("status %+v", st)
	}
	// The heartbeats that follow keep each member's start time.
	time.Sleep(a.Ingest.cfg.LeaseTTL/3 + time.Second)
	later, err := ReadStatus(ctx, js, "alertd")
	if err != nil {
		t.Fatal(err)
	}
	if !later.Started["a"].Equal(st.Started["a"]) || !later.Started["b"].Equal(st.Started["b"]) {
		t.Errorf("start times moved with the heartbeats: %v, then %v", st.Started, later.Started)
	}
}

// A failed first connection names the servers, never a URL's credentials.
func TestConnectErrorNamesTheServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Connect(ctx, []string{"nats://alertd:s3cret@127.0.0.1:1"}, "", nil, "test")
	var ce *ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a *ConnectError", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "nats://127.0.0.1:1") || strings.Contains(msg, "s3cret") {
		t.Errorf("error %q: want the URL without its password", msg)
	}
}
