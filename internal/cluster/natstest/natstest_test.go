package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alertd/alertd/internal/cluster/natstest"
)

// A 3-node cluster must start in a few seconds, or every cluster test pays
// for it in CI.
func TestStartThreeNodes(t *testing.T) {
	start := time.Now()
	c := natstest.Start(t, 3)
	took := time.Since(start)
	t.Logf("3-node JetStream cluster ready in %v", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("3-node cluster took %v to start; want a few seconds", took)
	}

	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
	if err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	if n := len(s.CachedInfo().Cluster.Replicas); n != 2 {
		t.Fatalf("R3 stream has %d followers, want 2", n)
	}

	// A node killed and restarted rejoins on its ports with its store.
	c.Kill(2)
	c.Restart(2)
	c.WaitReady()
	if c.Server(2) == nil || !c.Server(2).JetStreamEnabled() {
		t.Fatal("restarted node has no JetStream")
	}
}

func TestStartOneNode(t *testing.T) {
	c := natstest.Start(t, 1)
	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.AccountInfo(context.Background()); err != nil {
		t.Fatalf("JetStream account info: %v", err)
	}
}
