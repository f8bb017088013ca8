// Package cluster owns alertd's partitioned, highly available ingest on
// NATS JetStream (issue 15, first slice): device readings arrive through
// nats-server's MQTT listener, are spread over N partitions by a hash of
// the whole topic, and each partition is consumed by exactly one live
// alertd instance at a time, which a peer replaces within LeaseTTL when it
// dies. It also owns the clustered outbox (outbox.go): rendered mails in a
// work-queue stream, deduplicated by Message-ID, delivered by any instance.
// docs/cluster.md is the operator's account, with the failure model.
//
// # Partitioning
//
// One stream, <prefix>_ingest, captures the configured MQTT filters
// (converted to NATS subjects as nats-server does: '/' → '.', '+' → '*',
// '#' → '>'). Its subject transform ">" → "<prefix>.in.{{partition(N)}}.>"
// stores each reading under its partition. With no token arguments,
// nats-server's partition function hashes every token of the subject
// (FNV-1a 32, modulo N; server/subject_transform.go), so one series always
// lands in one partition whatever its topic shape, "sensors/#" included.
// The alternatives were worse: an account mapping's partition(N, 1, 2)
// hashes only '*' tokens and needs one server-side mapping per topic
// shape; hashing in alertd would have every instance receive every
// reading. Limits: N is fixed for the stream's life (a change is refused);
// the filter "#" alone is refused (it would capture $MQTT subjects).
// PartitionOf computes the same hash for reports and tests.
//
// # Ownership and fencing
//
// Each partition has one durable pull consumer, <prefix>_p<NNN>. Which
// instance reads it is decided by leases in the KV bucket <prefix>_cluster,
// whose TTL is LeaseTTL: every write restarts a key's age, and an expiry
// leaves a marker the watchers see. An instance heartbeats member.<id>;
// it takes lease.<p> by a create (succeeds only on an absent, deleted or
// expired key), renews it every LeaseTTL/3 by an update conditioned on its
// last revision, and gives it up by a delete conditioned the same way.
// The revision of the taking write is the term: bucket revisions only
// grow, so a later owner's term is larger, and the state store refuses a
// write carrying an older one. A refused renewal is
// the fence this slice enforces: the instance stops consuming and logs
// that it stepped back. Locally, a lease is trusted for 4/5 of LeaseTTL
// after the renewal was sent; after that the instance stops pulling,
// hands nothing more to its handler and refuses acks (ErrNotOwner).
//
// Every instance computes the assignment itself from the same view (see
// assign.go): balanced within ±1, and sticky, so a death moves only the
// dead instance's partitions. There is no leader; the lease's
// compare-and-set settles any disagreement. JetStream's pinned priority
// groups were the other option: there the server pins whichever client
// pulls first, so the shares are not balanced, and the pin is invisible
// to a store, so it fences deliveries but not state writes.
//
// # State
//
// PartitionState (state.go) keeps one partition's buckets in the stream
// <prefix>_state, a subject per key, and a fence subject per partition
// holding the owner's term. Opening takes the fence by a write conditioned
// on the sequence the load saw; every Commit is one atomic batch of the
// writes and the fence rewritten under the same condition, so a stale
// owner's commit is refused whole. Reads come from memory.
//
// # Invariants
//
//   - One goroutine, the coordinator, writes the bucket; one goroutine per
//     held partition calls the Handler, so a partition's readings are
//     handled in order.
//   - A reading is acknowledged only by Reading.Ack, which the caller
//     calls after its effects are committed, and only while the lease that
//     delivered it is valid.
//   - Only tests import natstest, and with it nats-server: the alertd
//     binary links nats.go alone, and only once app wires this package.
package cluster
