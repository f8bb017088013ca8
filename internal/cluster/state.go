package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PartitionState is one partition's state (series state, dedupe windows,
// group items: bucket name + key → value) as its owner sees it: read from
// memory, written to the stream <prefix>_state by atomic batches that
// carry the partition's fence. The owner is the only writer, so memory is
// the truth between commits; a commit that another owner's fence refuses
// leaves both the stream and memory as they were.
//
// Fencing: the fence subject <prefix>.state.<p>.fence holds the term of
// the owner that last wrote the partition. OpenState takes it by a write
// conditioned (Nats-Expected-Last-Subject-Sequence) on the sequence it
// read, refusing when it already carries a term at least as large; every
// Commit rewrites it under the same condition, in the same atomic batch
// as the writes. A newer owner's open moves the fence's sequence, so the
// stale owner's next batch is refused whole.
//
// Deletes are written as delete markers (an empty message with the header
// Alertd-Op: del), which MaxMsgsPerSubject 1 makes the key's only message;
// the loader skips them. A purge would be a separate API call outside the
// atomic batch, so a crash between the two could resurrect a key.
type PartitionState struct {
	js     jetstream.JetStream
	stream jetstream.Stream // the state stream, for reading the fence
	cfg    StateConfig
	names  names
	p      int
	term   uint64

	commitMu sync.Mutex // one commit (or resync) at a time
	fenceSeq uint64     // the fence's last sequence, under commitMu
	broken   error      // sticky *FencedError or ErrUnknownOutcome, under commitMu

	mu   sync.RWMutex
	data map[string]map[string][]byte // bucket → key → value
}

// StateConfig says where partition state lives. Prefix and Replicas mean
// what they mean in Config, and must match across a deployment.
type StateConfig struct {
	Prefix   string
	Replicas int

	// Timeout bounds each server call: a stream create, a load's fetch, a
	// commit's reply. 5s: a commit is one Raft round trip (milliseconds);
	// a call still unanswered after 5s is in an election, and a commit is
	// then reported as ErrUnknownOutcome rather than waited for, so the
	// caller can hold the reading unacknowledged.
	Timeout time.Duration

	// MaxBatch is the largest atomic batch the servers accept, in
	// messages: 1000, nats-server's default (jetstream max_batch_size;
	// the server does not advertise it). A commit takes one message per
	// distinct key written plus one for the fence.
	MaxBatch int
}

// Defaults for StateConfig, each explained on its field.
const (
	DefaultStateTimeout  = 5 * time.Second
	DefaultStateMaxBatch = 1000
)

// Write is one change in a Commit: Value stored under Bucket/Key, or the
// key removed when Delete is set.
type Write struct {
	Bucket, Key, Value []byte
	Delete             bool
}

// Errors of OpenState and Commit.
var (
	// ErrFenced: another owner holds the partition's fence, with a term
	// at least ours, or it moved under this owner. The owner steps back;
	// a fenced PartitionState refuses every later Commit.
	ErrFenced = errors.New("partition state fenced by another owner")
	// ErrBatchTooLarge: a commit needs more messages than one atomic
	// batch holds. Nothing was sent; commits are never split.
	ErrBatchTooLarge = errors.New("commit too large for one atomic batch")
	// ErrKeyTooLong: a bucket name and key longer together than
	// maxStateKey bytes. Nothing was sent.
	ErrKeyTooLong = errors.New("state bucket and key too long")
	// ErrBusy: the servers have too many atomic batches in flight on the
	// stream (50 by default). Nothing was applied; retry.
	ErrBusy = errors.New("too many atomic batches in flight")
	// ErrUnknownOutcome: a commit got no answer (a timeout, a lost
	// connection), so it may or may not have been applied. The state
	// refuses commits until Resync has reloaded it.
	ErrUnknownOutcome = errors.New("commit outcome unknown")
)

// FencedError is the ErrFenced of one partition: Term is ours, Holder the
// fence's when it was read (0 when a conditioned write was refused without
// it).
type FencedError struct {
	Partition    int
	Term, Holder uint64
}

func (e *FencedError) Error() string {
	if e.Holder != 0 {
		return fmt.Sprintf("partition %d: term %d fenced: the fence carries term %d", e.Partition, e.Term, e.Holder)
	}
	return fmt.Sprintf("partition %d: term %d fenced: the fence moved", e.Partition, e.Term)
}

// Is makes errors.Is(err, ErrFenced) hold.
func (e *FencedError) Is(target error) bool { return target == ErrFenced }

// Headers alertd's state messages carry; the Nats-* ones are nats-server's
// (server/stream.go).
const (
	hdrStateOp         = "Alertd-Op"
	stateOpDelete      = "del"
	hdrBatchID         = "Nats-Batch-Id"
	hdrBatchSeq        = "Nats-Batch-Sequence"
	hdrBatchCommit     = "Nats-Batch-Commit"
	hdrExpectedSubjSeq = "Nats-Expected-Last-Subject-Sequence"
)

// nats-server's error codes a commit distinguishes (server/errors.json).
const (
	errCodeWrongLastSeq      jetstream.ErrorCode = 10071 // the fence moved
	errCodeWrongLastSeqConst jetstream.ErrorCode = 10164 // the fence moved (R>1), or a write to it is in flight
	errCodeBatchTooLarge     jetstream.ErrorCode = 10199
	errCodeBatchInflight     jetstream.ErrorCode = 10210
)

// OpenState loads partition p's state and takes its fence for term. It
// creates the state stream if needed. It refuses with a *FencedError when
// the fence already carries a term ≥ term, or when its conditioned write
// keeps being refused.
func OpenState(ctx context.Context, js jetstream.JetStream, cfg StateConfig, p int, term uint64) (*PartitionState, error) {
	if js == nil {
		return nil, errors.New("cluster: state: no JetStream context")
	}
	if term == 0 {
		return nil, errors.New("cluster: state: term 0")
	}
	if p < 0 || p >= maxPartitions {
		return nil, fmt.Errorf("cluster: state: partition %d: want 0 to %d", p, maxPartitions-1)
	}
	cfg = cfg.withDefaults()
	s := &PartitionState{js: js, cfg: cfg, names: newNames(cfg.Prefix), p: p, term: term}
	if err := s.ensureStream(ctx); err != nil {
		return nil, err
	}
	if err := s.take(ctx, func(holder uint64) bool { return holder < term }); err != nil {
		return nil, err
	}
	return s, nil
}

func (c StateConfig) withDefaults() StateConfig {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultStateTimeout
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultStateMaxBatch
	}
	return c
}

// ensureStream creates the state stream, and updates it only when it
// exists with another configuration (create is idempotent on an equal one).
func (s *PartitionState) ensureStream(ctx context.Context) error {
	scfg := jetstream.StreamConfig{
		Name:        s.names.stateStream(),
		Description: "alertd: partition state, written by each partition's owner",
		Subjects:    []string{s.names.stateSubjects()},
		// One message per subject: a key's last write (or delete marker),
		// a fence's last term. Older ones are garbage.
		MaxMsgsPerSubject:  1,
		Storage:            jetstream.FileStorage,
		Replicas:           s.cfg.Replicas,
		AllowDirect:        true,
		AllowAtomicPublish: true,
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	st, err := createOrUpdateStream(ctx, s.js, scfg)
	if err != nil {
		return fmt.Errorf("create state stream %s: %w", scfg.Name, err)
	}
	// A server before 2.12 ignores the setting it does not know, and then
	// stores a batch's messages one by one: the writes of a refused batch
	// would be kept.
	if !st.CachedInfo().Config.AllowAtomicPublish {
		return fmt.Errorf("state stream %s: the NATS servers do not support atomic batch publish (nats-server 2.12 or later)", scfg.Name)
	}
	s.stream = st
	return nil
}

// take loads the partition and writes the fence conditioned on the
// sequence the load saw, if allowed accepts the term it carries. The load
// happens before the conditioned write, so a success means nothing was
// written between them: memory is exactly the stream at the new fence. A
// refused write (a commit of the previous owner landing meanwhile) is
// retried from the load a few times, and so is an unanswered one: if it
// landed, the reload finds this term on the fence and takes it again.
func (s *PartitionState) take(ctx context.Context, allowed func(holder uint64) bool) error {
	const attempts = 3
	var lastErr error // an unanswered fence write, which may have landed
	for range attempts {
		data, seq, holder, err := s.load(ctx)
		if err != nil {
			return err
		}
		// Only this call writes this term, so after an unanswered write
		// the fence carrying it is ours.
		if !allowed(holder) && !(lastErr != nil && holder == s.term) {
			return &FencedError{Partition: s.p, Term: s.term, Holder: holder}
		}
		ack, err := s.publishFence(ctx, seq)
		var apiErr *jetstream.APIError
		switch {
		case errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeWrongLastSeq || apiErr.ErrorCode == errCodeWrongLastSeqConst):
			continue
		case errors.As(err, &apiErr) || errors.Is(err, nats.ErrNoResponders) || ctx.Err() != nil:
			return fmt.Errorf("take fence of partition %d: %w", s.p, err)
		case err != nil:
			lastErr = err
			continue
		}
		s.mu.Lock()
		s.data = data
		s.mu.Unlock()
		s.fenceSeq = ack.Sequence
		return nil
	}
	if lastErr != nil {
		return fmt.Errorf("take fence of partition %d: %w", s.p, lastErr)
	}
	return &FencedError{Partition: s.p, Term: s.term}
}

func (s *PartitionState) publishFence(ctx context.Context, seq uint64) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	m := nats.NewMsg(s.names.stateFence(s.p))
	m.Data = []byte(strconv.FormatUint(s.term, 10))
	return s.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(seq))
}

// Resync reloads the state from the stream after ErrUnknownOutcome and
// rewrites the fence, still under this term: once it succeeds, no batch
// sent before it can land any more (its condition names an older fence
// sequence). It fails with a *FencedError if another owner took the fence.
func (s *PartitionState) Resync(ctx context.Context) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if errors.Is(s.broken, ErrFenced) {
		return s.broken
	}
	err := s.take(ctx, func(holder uint64) bool { return holder == s.term })
	if errors.Is(err, ErrFenced) {
		s.broken = err
		return err
	}
	if err == nil {
		s.broken = nil
	}
	return err
}

// Partition and Term say whose state this is.
func (s *PartitionState) Partition() int { return s.p }
func (s *PartitionState) Term() uint64   { return s.term }

// Get returns a copy of the value under bucket/key, and whether it exists.
func (s *PartitionState) Get(bucket, key []byte) ([]byte, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.data[string(bucket)][string(key)]
	return bytes.Clone(v), ok
}

// ForEach calls fn for every key of bucket in byte order, on a snapshot
// taken when it starts, until fn returns an error, which it returns. fn
// must not modify the slices it is given.
func (s *PartitionState) ForEach(bucket []byte, fn func(key, value []byte) error) error {
	type pair struct {
		k string
		v []byte
	}
	s.mu.RLock()
	b := s.data[string(bucket)]
	snap := make([]pair, 0, len(b))
	for k, v := range b {
		snap = append(snap, pair{k, v})
	}
	s.mu.RUnlock()
	slices.SortFunc(snap, func(x, y pair) int { return strings.Compare(x.k, y.k) })
	for _, kv := range snap {
		if err := fn([]byte(kv.k), kv.v); err != nil {
			return err
		}
	}
	return nil
}

// Commit writes writes and the fence in one atomic batch. It returns nil
// once the stream has stored all of them, and then memory shows them; on
// any error nothing was applied (except ErrUnknownOutcome, where nobody
// knows until Resync). A refused fence returns a *FencedError, after which
// the state refuses every commit: the caller steps back. When one key is
// written twice, the later write wins. With no writes, Commit only checks
// and rewrites the fence.
func (s *PartitionState) Commit(ctx context.Context, writes []Write) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if s.broken != nil {
		return s.broken
	}
	writes = lastWriteWins(writes)
	if n := len(writes) + 1; n > s.cfg.MaxBatch {
		return fmt.Errorf("partition %d: %d writes and the fence in a batch of at most %d: %w", s.p, len(writes), s.cfg.MaxBatch, ErrBatchTooLarge)
	}
	msgs, err := s.batchMessages(writes)
	if err != nil {
		return err
	}
	// A conflict with a write in flight on the fence is retried a little:
	// it is this owner's previous commit being applied (nats-server sends
	// the ack before it clears its in-flight record), or another owner's
	// take, which the retry then sees as a moved fence.
	var apiErr *jetstream.APIError
	for attempt := 0; ; attempt++ {
		seq, sent, err := s.publishBatch(ctx, msgs)
		switch {
		case err == nil:
			s.fenceSeq = seq
			s.apply(writes)
			return nil
		case !sent || errors.Is(err, nats.ErrNoResponders):
			// The commit never reached a stream: nothing can apply.
			return fmt.Errorf("commit partition %d: %w", s.p, err)
		case !errors.As(err, &apiErr):
			s.broken = fmt.Errorf("commit partition %d: %w (%w)", s.p, ErrUnknownOutcome, err)
			return s.broken
		case apiErr.ErrorCode == errCodeWrongLastSeqConst && attempt < 3:
			select {
			case <-ctx.Done():
				return fmt.Errorf("commit partition %d: %w", s.p, ctx.Err())
			case <-time.After(time.Duration(attempt+1) * 10 * time.Millisecond):
			}
		case apiErr.ErrorCode == errCodeWrongLastSeq || apiErr.ErrorCode == errCodeWrongLastSeqConst:
			s.broken = &FencedError{Partition: s.p, Term: s.term, Holder: s.holder(ctx)}
			return s.broken
		case apiErr.ErrorCode == errCodeBatchInflight:
			return fmt.Errorf("commit partition %d: %w: %w", s.p, ErrBusy, err)
		case apiErr.ErrorCode == errCodeBatchTooLarge:
			return fmt.Errorf("commit partition %d: %w: %w", s.p, ErrBatchTooLarge, err)
		default:
			// Refused before it was proposed: nothing applied.
			return fmt.Errorf("commit partition %d: %w", s.p, err)
		}
	}
}

// lastWriteWins keeps the last write of each key, in the order of those
// last writes: a batch may not write one subject twice and still check a
// sequence on it, and a stored key has one message anyway.
func lastWriteWins(writes []Write) []Write {
	type bk struct{ b, k string }
	last := make(map[bk]int, len(writes))
	for i, w := range writes {
		last[bk{string(w.Bucket), string(w.Key)}] = i
	}
	if len(last) == len(writes) {
		return writes
	}
	out := make([]Write, 0, len(last))
	for i, w := range writes {
		if last[bk{string(w.Bucket), string(w.Key)}] == i {
			out = append(out, w)
		}
	}
	return out
}

// batchMessages builds the writes' messages and, last, the fence's, which
// commits the batch.
func (s *PartitionState) batchMessages(writes []Write) ([]*nats.Msg, error) {
	maxPayload := s.js.Conn().MaxPayload()
	msgs := make([]*nats.Msg, 0, len(writes)+1)
	for _, w := range writes {
		if len(w.Bucket)+len(w.Key) > maxStateKey {
			return nil, fmt.Errorf("partition %d: bucket and key of %d bytes, at most %d: %w", s.p, len(w.Bucket)+len(w.Key), maxStateKey, ErrKeyTooLong)
		}
		m := nats.NewMsg(s.names.stateKey(s.p, w.Bucket, w.Key))
		if w.Delete {
			m.Header.Set(hdrStateOp, stateOpDelete)
		} else {
			m.Data = w.Value
		}
		if int64(len(m.Data)) > maxPayload-1024 {
			return nil, fmt.Errorf("partition %d: value of %d bytes, the servers take at most about %d", s.p, len(m.Data), maxPayload-1024)
		}
		msgs = append(msgs, m)
	}
	fence := nats.NewMsg(s.names.stateFence(s.p))
	fence.Data = []byte(strconv.FormatUint(s.term, 10))
	fence.Header.Set(hdrExpectedSubjSeq, strconv.FormatUint(s.fenceSeq, 10))
	return append(msgs, fence), nil
}

// batchAck is nats-server's reply to a batch's commit: a PubAck naming the
// batch, or an error.
type batchAck struct {
	Error  *jetstream.APIError `json:"error,omitempty"`
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch"`
	Count  int                 `json:"count"`
}

// publishBatch sends msgs as one atomic batch and returns the sequence of
// the last (the fence). Every message but the last is published without a
// reply: the server answers only the commit, and a message lost on the
// way makes the commit fail as an incomplete batch. sent reports whether
// the commit message may have left: if not, nothing can have applied.
func (s *PartitionState) publishBatch(ctx context.Context, msgs []*nats.Msg) (seq uint64, sent bool, err error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	id, err := batchID()
	if err != nil {
		return 0, false, err
	}
	nc := s.js.Conn()
	for i, m := range msgs {
		m.Header.Set(hdrBatchID, id)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		if i < len(msgs)-1 {
			if err := nc.PublishMsg(m); err != nil {
				return 0, false, err
			}
		}
	}
	commit := msgs[len(msgs)-1]
	commit.Header.Set(hdrBatchCommit, "1")
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	reply, err := nc.RequestMsgWithContext(ctx, commit)
	if err != nil {
		return 0, true, err
	}
	var ack batchAck
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return 0, true, fmt.Errorf("decode batch reply: %w", err)
	}
	if ack.Error != nil {
		return 0, true, ack.Error
	}
	if ack.Batch != id || ack.Count != len(msgs) {
		return 0, true, fmt.Errorf("batch reply names batch %q of %d, sent %q of %d", ack.Batch, ack.Count, id, len(msgs))
	}
	return ack.Seq, true, nil
}

// holder reads the term the fence carries now, for the error that says
// who fenced this owner; 0 if it cannot be read.
func (s *PartitionState) holder(ctx context.Context) uint64 {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	m, err := s.stream.GetLastMsgForSubject(ctx, s.names.stateFence(s.p))
	if err != nil {
		return 0
	}
	// A direct get may be answered by a replica that has not applied the
	// newer owner's write yet; a term not above ours says nothing.
	term, _ := strconv.ParseUint(string(m.Data), 10, 64)
	if term <= s.term {
		return 0
	}
	return term
}

// batchID is unique per batch; nats-server takes at most 64 characters.
func batchID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("batch id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func (s *PartitionState) apply(writes []Write) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range writes {
		b := s.data[string(w.Bucket)]
		if w.Delete {
			delete(b, string(w.Key))
			if len(b) == 0 {
				delete(s.data, string(w.Bucket))
			}
			continue
		}
		if b == nil {
			b = map[string][]byte{}
			s.data[string(w.Bucket)] = b
		}
		b[string(w.Key)] = append([]byte{}, w.Value...)
	}
}

// load reads the last message of every subject of the partition through
// an ephemeral consumer. It returns the live keys, and the fence's
// sequence and term (0 and 0 when there is none yet).
//
// The consumer may run on a replica that lags the stream's leader. That
// is safe because a replica applies the stream in order: what it delivers
// is a prefix of the stream, perhaps ending inside a batch, and any write
// after the fence it delivered moved that fence, so the conditioned write
// that follows every load is refused and the load retried.
func (s *PartitionState) load(ctx context.Context) (data map[string]map[string][]byte, fenceSeq, holder uint64, err error) {
	stream := s.names.stateStream()
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	cons, err := s.js.CreateConsumer(cctx, stream, jetstream.ConsumerConfig{
		Description:   fmt.Sprintf("alertd: load of partition %d's state", s.p),
		FilterSubject: s.names.statePartition(s.p),
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:     jetstream.AckNonePolicy,
		// Removed below; the threshold cleans up after a crash mid-load.
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		return nil, 0, 0, fmt.Errorf("load partition %d: create consumer: %w", s.p, err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
		defer dcancel()
		_ = s.js.DeleteConsumer(dctx, stream, cons.CachedInfo().Name)
	}()
	l := &loading{data: map[string]map[string][]byte{}, pending: cons.CachedInfo().NumPending}
	for l.pending > 0 {
		if err := s.fetch(ctx, cons, l); err != nil {
			return nil, 0, 0, fmt.Errorf("load partition %d: %w", s.p, err)
		}
	}
	return l.data, l.fenceSeq, l.holder, nil
}

// loading is what a load has read so far.
type loading struct {
	data             map[string]map[string][]byte
	pending          uint64 // messages the consumer has still to deliver
	fenceSeq, holder uint64
}

// fetch reads the next messages of a load. A consumer just created on
// another node may not answer its first pull yet (no responders: once in
// some 80 loads on 3 nodes under -race): retried within Timeout.
func (s *PartitionState) fetch(ctx context.Context, cons jetstream.Consumer, l *loading) error {
	deadline := time.Now().Add(s.cfg.Timeout)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.Fetch(int(min(l.pending, 1000)), jetstream.FetchMaxWait(s.cfg.Timeout))
		if err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if err := s.loadOne(l, m); err != nil {
				return err
			}
		}
		err = batch.Error()
		switch {
		case got == 0 && errors.Is(err, nats.ErrNoResponders) && time.Now().Before(deadline):
			time.Sleep(20 * time.Millisecond)
			continue
		case err != nil:
			return fmt.Errorf("fetch: %w", err)
		case got == 0:
			return fmt.Errorf("no messages within %v with %d pending", s.cfg.Timeout, l.pending)
		}
		return nil
	}
}

func (s *PartitionState) loadOne(l *loading, m jetstream.Msg) error {
	md, err := m.Metadata()
	if err != nil {
		return err
	}
	l.pending = md.NumPending
	if m.Subject() == s.names.stateFence(s.p) {
		l.fenceSeq = md.Sequence.Stream
		if l.holder, err = strconv.ParseUint(string(m.Data()), 10, 64); err != nil {
			return fmt.Errorf("fence value: %w", err)
		}
		return nil
	}
	if m.Headers().Get(hdrStateOp) == stateOpDelete {
		return nil
	}
	bucket, key, _, err := s.names.parseStateKey(s.p, m.Subject())
	if err != nil {
		return err
	}
	b := l.data[string(bucket)]
	if b == nil {
		b = map[string][]byte{}
		l.data[string(bucket)] = b
	}
	b[string(key)] = append([]byte{}, m.Data()...)
	return nil
}
