package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// ensureTopology creates, or brings up to date, the ingest stream, one
// durable consumer per partition and the lease bucket. Every instance runs
// it at start; it is idempotent, so instances starting together agree.
//
// Each is created first and looked up or updated only if it exists with
// another configuration, never CreateOrUpdate*: that sends an update
// first, and in nats-server 2.15.3 a request about a stream racing another
// instance's create of it got no reply at all (three instances starting
// together all timed out; TestTakeoverAfterCrash found it).
func ensureTopology(ctx context.Context, c Config, n names) (jetstream.KeyValue, error) {
	if err := ensureStream(ctx, c, n); err != nil {
		return nil, err
	}
	// Created together: each is a Raft group of its own, so one at a time
	// costs a round of elections per partition at first start.
	errs := make([]error, c.Partitions)
	var wg sync.WaitGroup
	for p := range c.Partitions {
		wg.Go(func() { errs[p] = ensureConsumer(ctx, c, n, p) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	kcfg := jetstream.KeyValueConfig{
		Bucket:      n.bucket,
		Description: "alertd cluster membership and partition leases",
		History:     1,
		// Every write restarts its key's age, so a key lives TTL past its
		// last renewal; the expiry marker is what tells the watchers.
		TTL:            c.LeaseTTL,
		LimitMarkerTTL: c.LeaseTTL,
		// On disk although a lease is worth nothing after a few seconds:
		// a memory replica restarts empty, and its Raft log with it, so
		// losing another node while it catches up lost the bucket's
		// quorum for good in TestNATSNodeLoss.
		Storage:  jetstream.FileStorage,
		Replicas: c.Replicas,
	}
	kv, err := c.JS.CreateKeyValue(ctx, kcfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = c.JS.UpdateKeyValue(ctx, kcfg)
	}
	if err != nil {
		return nil, fmt.Errorf("create lease bucket %s: %w", n.bucket, err)
	}
	return kv, nil
}

// createOrUpdateStream creates a stream, or updates it when it exists with
// another configuration (a create is idempotent on an equal one, and does
// not need the update's rights).
func createOrUpdateStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	st, err := js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		st, err = js.UpdateStream(ctx, cfg)
	}
	return st, err
}

// ensureStream makes the stream that captures the devices' subjects and
// stores each under its partition. The transform's `{{partition(n)}}`
// with no token arguments hashes the whole subject (nats-server
// server/subject_transform.go), so every topic shape is spread by all of
// its levels, which a mapping's `partition(n, 1, 2)` of wildcard tokens
// cannot do for "sensors/#".
func ensureStream(ctx context.Context, c Config, n names) error {
	subjects := make([]string, 0, len(c.Filters))
	for _, f := range c.Filters {
		s, err := filterToSubject(f)
		if err != nil {
			return err
		}
		subjects = append(subjects, s)
	}
	dest := n.transformDest(c.Partitions)
	scfg := jetstream.StreamConfig{
		Name:        n.stream,
		Description: "alertd: device readings by partition",
		Subjects:    subjects,
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      ">",
			Destination: dest,
		},
		// Each reading belongs to exactly one partition's consumer; once
		// acknowledged it is done, so the stream holds only the backlog.
		Retention: jetstream.WorkQueuePolicy,
		MaxAge:    c.MaxAge,
		Storage:   jetstream.FileStorage,
		Replicas:  c.Replicas,
	}
	_, err := c.JS.CreateStream(ctx, scfg)
	if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		if err != nil {
			return fmt.Errorf("create stream %s: %w", n.stream, err)
		}
		return nil
	}
	// It exists with another configuration.
	s, err := c.JS.Stream(ctx, n.stream)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", n.stream, err)
	}
	// A different count would put one topic in two partitions while old
	// readings drain: refused until re-partitioning exists.
	if tr := s.CachedInfo().Config.SubjectTransform; tr != nil && tr.Destination != dest {
		return fmt.Errorf("stream %s partitions by %q, config says %q: changing the partition count is not supported yet", n.stream, tr.Destination, dest)
	}
	if _, err := c.JS.UpdateStream(ctx, scfg); err != nil {
		return fmt.Errorf("update stream %s: %w", n.stream, err)
	}
	return nil
}

func ensureConsumer(ctx context.Context, c Config, n names, p int) error {
	ccfg := jetstream.ConsumerConfig{
		Durable:       n.consumer(p),
		Description:   fmt.Sprintf("alertd partition %d", p),
		FilterSubject: n.ingestSubject(p),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		// Unbounded: at-least-once; a reading the handler keeps refusing
		// is retried with a delay (a dead-letter after N: not yet).
		MaxDeliver: -1,
		// One owner at a time, reading in order; a few hundred unacked is
		// a group commit's worth without letting a stuck owner hoard.
		MaxAckPending: 1024,
		Replicas:      c.Replicas,
	}
	_, err := c.JS.CreateConsumer(ctx, n.stream, ccfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		_, err = c.JS.UpdateConsumer(ctx, n.stream, ccfg)
	}
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", n.consumer(p), err)
	}
	return nil
}
