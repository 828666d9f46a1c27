// Package natsjournal is an oplog.Journal on NATS JetStream: each worker's
// journal is a subject of one stream, each append one message holding
// its entries as oplog records, written only if the subject's last
// message is still the one the append was checked against (expected last
// subject sequence), so that an append is whole or absent and indexes run
// on without a gap whichever runner writes. Cursors are in a KV bucket,
// written by compare-and-set.
package natsjournal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	version "github.com/hashicorp/go-version"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
)

// Headers of a journal message.
const (
	hdrFirst = "Soplug-First" // the index of the message's first entry
	hdrCount = "Soplug-Count" // how many entries it holds
)

// Config configures a Journal. The zero value uses the stream SOPLUG_OPLOG
// on subjects soplug.oplog.<worker>, the bucket soplug-cursors, one
// replica.
type Config struct {
	// Stream is the JetStream stream of the journals.
	Stream string
	// Prefix is the subjects' first tokens: a worker's journal is
	// <Prefix>.<Token(worker)>.
	Prefix string
	// Bucket is the KV bucket of the cursors.
	Bucket string
	// Replicas is the stream's and the bucket's replica count: 1 for a
	// single server, 3 for a cluster that keeps everything through the
	// loss of one node. Zero means 1. A stream or bucket that exists with
	// another count is an error, and is left as it is.
	Replicas int
	// Timeout bounds each JetStream request. Zero means 5 s.
	Timeout time.Duration
	// Owner names this runner in the workers' leases. Empty means
	// <host>/<pid>/<random>: a name no other process has.
	Owner string
	// LeaseTTL is how long a worker's lease lasts unless its owner
	// writes its cursor again: a runner that dies is replaced that long
	// after its last write. Zero means DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Logger receives what a caller is not told. Nil means none.
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.Stream == "" {
		c.Stream = "SOPLUG_OPLOG"
	}
	if c.Prefix == "" {
		c.Prefix = "soplug.oplog"
	}
	if c.Bucket == "" {
		c.Bucket = "soplug-cursors"
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Owner == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.Owner = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// DefaultLeaseTTL is Config.LeaseTTL's default.
const DefaultLeaseTTL = 10 * time.Second

// ErrMismatch is a stream or bucket that exists with another
// configuration than the one asked for.
var ErrMismatch = errors.New("natsjournal: existing configuration differs")

// Journal is the oplog.Journal of a JetStream stream. It is safe for
// concurrent use, and several processes may share one stream.
type Journal struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
	direct *directReader // nil when the stream does not allow direct gets

	lastErr atomic.Pointer[error] // the last request the cluster did not answer, until one it does

	mu    sync.Mutex
	tails map[string]tail        // what this process last saw of a worker's end
	seen  map[string]struct{}    // the workers whose journal this process has seen
	locks map[string]*sync.Mutex // one append at a time per worker, in this process
}

// tail is a worker's journal end: the sequence of its last message, the
// index after its last entry, and its first index. lastSeq 0: no journal.
type tail struct {
	lastSeq     uint64
	first, next uint64
	lastFirst   uint64 // the index of the last message's first entry
}

// New returns the Journal of cfg on nc, creating the stream and the bucket
// when they are missing, and checking them when they exist.
func New(ctx context.Context, nc *nats.Conn, cfg Config) (*Journal, error) {
	cfg.defaults()
	if err := checkServerVersion(nc.ConnectedServerVersion()); err != nil {
		return nil, fmt.Errorf("%w (connected to %s)", err, nc.ConnectedUrlRedacted())
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("natsjournal: %w", err)
	}
	j := &Journal{cfg: cfg, nc: nc, js: js, tails: map[string]tail{}, seen: map[string]struct{}{}, locks: map[string]*sync.Mutex{}}
	sctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	want := jetstream.StreamConfig{
		Name: cfg.Stream, Subjects: []string{cfg.Prefix + ".>"}, Storage: jetstream.FileStorage,
		Replicas: cfg.Replicas, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardNew,
		AllowAtomicPublish: true, AllowDirect: true, Description: "soplug oplog journals, one subject per worker",
	}
	s, err := js.Stream(sctx, cfg.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = js.CreateStream(sctx, want)
		if err != nil {
			return nil, j.unavailable("creating stream "+cfg.Stream, err)
		}
	case err != nil:
		return nil, j.unavailable("stream "+cfg.Stream, err)
	default:
		have := s.CachedInfo().Config
		if have.Replicas != want.Replicas || !slices.Equal(have.Subjects, want.Subjects) || !have.AllowAtomicPublish {
			return nil, fmt.Errorf("%w: stream %s has subjects %v, %d replicas and atomic publish %v, not %v, %d and true; nothing was changed",
				ErrMismatch, cfg.Stream, have.Subjects, have.Replicas, have.AllowAtomicPublish, want.Subjects, want.Replicas)
		}
	}
	j.stream = s
	if s.CachedInfo().Config.AllowDirect {
		if j.direct, err = newDirectReader(nc, cfg.Stream); err != nil {
			return nil, err
		}
	} else {
		cfg.Logger.Info("the journals' stream does not allow direct gets: reads go to its leader one message at a time (nats stream edit --allow-direct reads them in batches)", "stream", cfg.Stream)
	}
	kv, err := js.KeyValue(sctx, cfg.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		kv, err = js.CreateKeyValue(sctx, jetstream.KeyValueConfig{Bucket: cfg.Bucket, Replicas: cfg.Replicas,
			Storage: jetstream.FileStorage, Description: "soplug oplog cursors"})
		if err != nil {
			return nil, j.unavailable("creating bucket "+cfg.Bucket, err)
		}
	case err != nil:
		return nil, j.unavailable("bucket "+cfg.Bucket, err)
	default:
		st, err := kv.Status(sctx)
		if err != nil {
			return nil, j.unavailable("bucket "+cfg.Bucket, err)
		}
		if r := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; r != cfg.Replicas {
			return nil, fmt.Errorf("%w: bucket %s has %d replicas, not %d; nothing was changed", ErrMismatch, cfg.Bucket, r, cfg.Replicas)
		}
	}
	j.kv = kv
	return j, nil
}

// MinServerVersion is the oldest nats-server a Journal works with: 2.12
// added atomic batches, which appends larger than a message use, and 2.11
// batched direct gets, which reads use.
const MinServerVersion = "2.12.0"

// ErrServerVersion is a nats-server older than MinServerVersion.
var ErrServerVersion = errors.New("natsjournal: nats-server too old")

// checkServerVersion returns ErrServerVersion, saying what is needed,
// unless v (as the server's INFO gives it) is MinServerVersion or later;
// a pre-release of a new enough version passes.
func checkServerVersion(v string) error {
	have, err := version.NewVersion(v)
	if err != nil {
		return fmt.Errorf("%w: its version %q does not parse (%v); %s or later is needed", ErrServerVersion, v, err, MinServerVersion)
	}
	if have.Core().LessThan(version.Must(version.NewVersion(MinServerVersion))) {
		return fmt.Errorf("%w: %s, and %s or later is needed (atomic batches, batched direct gets)", ErrServerVersion, v, MinServerVersion)
	}
	return nil
}

// unavailable wraps a failed request to the cluster in
// oplog.ErrUnavailable: the caller may retry. Health reports it until a
// request succeeds.
func (j *Journal) unavailable(what string, err error) error {
	err = fmt.Errorf("%w: natsjournal: %s: %w", oplog.ErrUnavailable, what, err)
	j.lastErr.Store(&err)
	return err
}

// ok records a request the cluster answered.
func (j *Journal) ok() { j.lastErr.Store(nil) }

// Health returns nil while the cluster answers: an error while the
// connection is down, or since the last request the cluster did not
// answer (no JetStream quorum, a timeout) until one it does.
func (j *Journal) Health() error {
	if !j.nc.IsConnected() {
		return fmt.Errorf("natsjournal: not connected to NATS (%s)", j.nc.Status())
	}
	if p := j.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (j *Journal) subject(worker string) string { return j.cfg.Prefix + "." + Token(worker) }

func (j *Journal) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, j.cfg.Timeout)
}

// lock returns worker's append lock in this process.
func (j *Journal) lock(worker string) *sync.Mutex {
	j.mu.Lock()
	defer j.mu.Unlock()
	l := j.locks[worker]
	if l == nil {
		l = &sync.Mutex{}
		j.locks[worker] = l
	}
	return l
}

// end returns worker's journal end, from this process's last append when
// it knows it and fresh is false, else from the stream.
func (j *Journal) end(ctx context.Context, worker string, fresh bool) (tail, error) {
	j.mu.Lock()
	t, ok := j.tails[worker]
	j.mu.Unlock()
	if ok && !fresh {
		return t, nil
	}
	cctx, cancel := j.ctx(ctx)
	defer cancel()
	m, err := j.get(cctx, j.cfg.Stream, msgGet{LastFor: j.subject(worker)})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return tail{}, nil
	}
	if err != nil {
		return tail{}, j.unavailable("reading the end of "+worker, err)
	}
	first, count, err := span(m.Header, worker, m.Sequence)
	if err != nil {
		return tail{}, err
	}
	t = tail{lastSeq: m.Sequence, next: first + count, lastFirst: first}
	head, err := j.Head(ctx, worker)
	if err != nil {
		return tail{}, err
	}
	t.first = head.Next
	j.remember(worker, t)
	return t, nil
}

// known reports whether this process has seen worker's journal.
func (j *Journal) known(worker string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, ok := j.seen[worker]
	return ok
}

func (j *Journal) remember(worker string, t tail) {
	j.mu.Lock()
	j.tails[worker] = t
	j.seen[worker] = struct{}{}
	j.mu.Unlock()
}

// span reads a message's first index and entry count.
func span(h nats.Header, worker string, seq uint64) (first, count uint64, err error) {
	first, ferr := strconv.ParseUint(h.Get(hdrFirst), 10, 64)
	count, cerr := strconv.ParseUint(h.Get(hdrCount), 10, 64)
	if ferr != nil || cerr != nil || first == 0 || count == 0 {
		return 0, 0, fmt.Errorf("%w: %s message %d: no valid %s and %s headers", oplog.ErrCorrupt, worker, seq, hdrFirst, hdrCount)
	}
	return first, count, nil
}

// Append appends entries to worker's journal with oplog.Writer.Put's
// rules (oplog.Overlap, oplog.Same), in one message published only if
// the subject's last message is the one they were checked against; when
// another writer got there first, the append is checked again against
// what it wrote. A request the cluster does not answer is an error
// wrapping oplog.ErrUnavailable: nothing, or the whole append, was
// stored, and a resend tells which.
func (j *Journal) Append(ctx context.Context, worker string, start uint64, entries []contract.Entry) (int, error) {
	if err := oplog.CheckWorkerID(worker); err != nil {
		return 0, err
	}
	if len(entries) == 0 {
		return 0, nil
	}
	l := j.lock(worker)
	l.Lock()
	defer l.Unlock()
	fresh := false
	for attempt := 0; ; attempt++ {
		t, err := j.end(ctx, worker, fresh)
		if err != nil {
			return 0, err
		}
		n, err := j.append(ctx, worker, start, entries, t)
		if !fresh && (errors.Is(err, oplog.ErrOutOfOrder) || errors.Is(err, oplog.ErrConflict)) {
			// Judged on what this process last saw: another runner may
			// have appended since. Judge again on the stream's end.
			fresh = true
			continue
		}
		if !isWrongLast(err) || attempt == 8 {
			return n, err
		}
		fresh = true // another writer appended: check against what it wrote
	}
}

func (j *Journal) append(ctx context.Context, worker string, start uint64, entries []contract.Entry, t tail) (int, error) {
	first, err := oplog.Begin(worker, t.lastSeq != 0, t.first, start, entries[0].Index)
	if err != nil {
		return 0, err
	}
	next := t.next
	if t.lastSeq == 0 {
		next = first
	}
	overlap, err := oplog.Overlap(worker, first, next, entries)
	if err != nil {
		return 0, err
	}
	if overlap > 0 {
		held, err := j.entries(ctx, worker, entries[0].Index, overlap, t)
		if err != nil {
			return 0, err
		}
		for i := range overlap {
			if err := oplog.Same(worker, held[i], entries[i]); err != nil {
				return 0, err
			}
		}
	}
	tailEntries := entries[overlap:] // left unstamped: a retry judges them as sent
	if len(tailEntries) == 0 {
		return 0, nil
	}
	now := time.Now().UTC()
	if err := oplog.CheckStamped(worker, tailEntries, now); err != nil {
		return 0, err
	}
	msgs, err := j.messages(worker, tailEntries, now)
	if err != nil {
		return 0, err
	}
	defer freeMessages(msgs)
	cctx, cancel := j.ctx(ctx)
	defer cancel()
	var seq uint64
	if len(msgs) == 1 {
		ack, err := j.js.PublishMsg(cctx, msgs[0], jetstream.WithExpectLastSequencePerSubject(t.lastSeq))
		if err != nil {
			if isWrongLast(err) {
				return 0, err
			}
			return 0, j.unavailable("appending to "+worker, err)
		}
		seq = ack.Sequence
	} else if seq, err = j.publishBatch(cctx, msgs, t.lastSeq); err != nil {
		if isWrongLast(err) {
			return 0, err
		}
		return 0, j.unavailable("appending to "+worker, err)
	}
	j.ok()
	lastFirst, _ := strconv.ParseUint(msgs[len(msgs)-1].Header.Get(hdrFirst), 10, 64)
	j.remember(worker, tail{lastSeq: seq, first: first, next: next + uint64(len(tailEntries)), lastFirst: lastFirst})
	return len(tailEntries), nil
}

// entries returns n entries of worker from index from, which the journal
// holds: read from the last message when they start in it (a resend of
// the last append), else from the head.
func (j *Journal) entries(ctx context.Context, worker string, from uint64, n int, t tail) ([]contract.Entry, error) {
	at := oplog.Position{Next: from, At: int64(t.lastSeq)}
	if t.lastFirst == 0 || from < t.lastFirst {
		head, err := j.Head(ctx, worker)
		if err != nil {
			return nil, err
		}
		at.At = head.At
	}
	var out []contract.Entry
	for len(out) < n {
		got, nextAt, err := j.Read(ctx, worker, at, 1<<16, 64<<20)
		if err != nil {
			return nil, err
		}
		if len(got) == 0 {
			return nil, fmt.Errorf("%w: %s ends before entry %d", oplog.ErrCorrupt, worker, from+uint64(len(out)))
		}
		for _, e := range got {
			if e.Index >= from && len(out) < n {
				out = append(out, e)
			}
		}
		at = nextAt
	}
	return out, nil
}

// Head returns where worker's journal starts: its first index, and the
// stream sequence of its first message. oplog.ErrNoJournal when it has
// none.
func (j *Journal) Head(ctx context.Context, worker string) (oplog.Position, error) {
	cctx, cancel := j.ctx(ctx)
	defer cancel()
	m, err := j.get(cctx, j.cfg.Stream, msgGet{Seq: 1, NextFor: j.subject(worker)})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return oplog.Position{}, fmt.Errorf("%w: %s", oplog.ErrNoJournal, worker)
	}
	if err != nil {
		return oplog.Position{}, j.unavailable("reading the start of "+worker, err)
	}
	first, _, err := span(m.Header, worker, m.Sequence)
	if err != nil {
		return oplog.Position{}, err
	}
	j.ok()
	j.mu.Lock()
	j.seen[worker] = struct{}{}
	j.mu.Unlock()
	return oplog.Position{Next: first, At: int64(m.Sequence)}, nil
}

// Read returns up to limit entries (and about maxBytes of payload, at
// least one entry) of worker from at, and the position after them. at.At
// is the stream sequence from which the message holding at.Next is looked
// for. Messages are read in batches from any replica where the stream
// allows it, and the end from the leader (direct.go).
func (j *Journal) Read(ctx context.Context, worker string, at oplog.Position, limit, maxBytes int) ([]contract.Entry, oplog.Position, error) {
	var out []contract.Entry
	size := 0
	seq := uint64(max(at.At, 1))
	leader := j.direct == nil
read:
	for len(out) < limit && (size < maxBytes || len(out) == 0) {
		msgs, err := j.fetch(ctx, worker, seq, limit-len(out), maxBytes-size, &leader)
		if err != nil {
			return out, at, err
		}
		if len(msgs) == 0 {
			if len(out) == 0 && !j.known(worker) {
				if _, herr := j.Head(ctx, worker); herr != nil {
					return nil, at, herr // ErrNoJournal: not an empty read
				}
			}
			break
		}
		for _, m := range msgs {
			es, err := j.decode(m, worker)
			if err != nil {
				return out, at, err
			}
			taken := 0
			for _, e := range es {
				if e.Index < at.Next {
					taken++
					continue
				}
				if e.Index != at.Next {
					return out, at, fmt.Errorf("%w: %s message %d: entry %d where %d was next", oplog.ErrCorrupt, worker, m.Sequence, e.Index, at.Next)
				}
				if len(out) == limit || (size >= maxBytes && len(out) > 0) {
					break
				}
				out = append(out, e)
				size += len(e.Payload)
				at.Next++
				taken++
			}
			if taken < len(es) {
				at.At = int64(m.Sequence) // more of this message next time
				break read
			}
			seq = m.Sequence + 1
			at.At = int64(seq)
		}
	}
	return out, at, nil
}

// fetch returns the next messages of worker from stream sequence seq, for
// a read that wants n more entries and about maxBytes more: a batch from
// any replica until *leader is set, which it is once a replica's answer
// ends; then, or when the batch is empty, the leader's next message. None
// at the journal's end.
func (j *Journal) fetch(ctx context.Context, worker string, seq uint64, n, maxBytes int, leader *bool) ([]*jetstream.RawStreamMsg, error) {
	if !*leader {
		cctx, cancel := j.ctx(ctx)
		got, more, err := j.direct.batch(cctx, j.subject(worker), seq, min(n, maxDirectBatch), max(maxBytes, 1))
		cancel()
		if err != nil && !errors.Is(err, nats.ErrNoResponders) {
			return nil, j.unavailable("reading "+worker, err)
		}
		// At the end of what the replica holds, the leader says whether
		// it is the stream's end.
		*leader = more == 0
		if len(got) > 0 {
			return got, nil
		}
	}
	cctx, cancel := j.ctx(ctx)
	defer cancel()
	m, err := j.get(cctx, j.cfg.Stream, msgGet{Seq: seq, NextFor: j.subject(worker)})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, j.unavailable("reading "+worker, err)
	}
	return []*jetstream.RawStreamMsg{m}, nil
}

// decode returns the entries of a journal message of worker, which must
// be what its headers say: count entries from first. (A message that
// says otherwise, published by something other than a Journal, would be
// skipped or delivered out of place.)
func (j *Journal) decode(m *jetstream.RawStreamMsg, worker string) ([]contract.Entry, error) {
	first, count, err := span(m.Header, worker, m.Sequence)
	if err != nil {
		return nil, err
	}
	es, err := oplog.DecodeRecords(m.Data, worker, fmt.Sprintf("%s message %d", worker, m.Sequence))
	if err != nil {
		return nil, err
	}
	if uint64(len(es)) != count || es[0].Index != first || es[len(es)-1].Index != first+count-1 {
		got := "none"
		if len(es) > 0 {
			got = fmt.Sprintf("%d entries from %d to %d", len(es), es[0].Index, es[len(es)-1].Index)
		}
		return nil, fmt.Errorf("%w: %s message %d: its headers say %d entries from %d, its records hold %s",
			oplog.ErrCorrupt, worker, m.Sequence, count, first, got)
	}
	return es, nil
}

// Workers lists the workers with a journal.
func (j *Journal) Workers(ctx context.Context) ([]string, error) {
	cctx, cancel := j.ctx(ctx)
	defer cancel()
	info, err := j.stream.Info(cctx, jetstream.WithSubjectFilter(j.cfg.Prefix+".>"))
	if err != nil {
		return nil, j.unavailable("listing workers", err)
	}
	out := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		w, err := Worker(strings.TrimPrefix(subj, j.cfg.Prefix+"."))
		if err != nil {
			j.cfg.Logger.Warn("a subject that names no worker", "subject", subj, "err", err)
			continue
		}
		out = append(out, w)
	}
	slices.Sort(out)
	return out, nil
}

// Watch tells notify of every worker at its start (Listed), then of each
// stored append (Changed), from an ordered consumer of the stream's
// headers: a message is announced once the stream holds it. It returns
// when ctx ends.
func (j *Journal) Watch(ctx context.Context, notify func(worker string, n oplog.Notice)) error {
	// The consumer first, then the list: an append between the two is
	// announced twice, never missed.
	cctx, cancel := j.ctx(ctx)
	cons, err := j.js.OrderedConsumer(cctx, j.cfg.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{j.cfg.Prefix + ".>"}, DeliverPolicy: jetstream.DeliverNewPolicy, HeadersOnly: true,
	})
	cancel()
	if err != nil {
		return j.unavailable("watching the stream", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		w, err := Worker(strings.TrimPrefix(m.Subject(), j.cfg.Prefix+"."))
		if err == nil {
			notify(w, oplog.Changed)
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The ordered consumer resets itself from the last message it
		// saw; what it met on the way is worth a line.
		j.cfg.Logger.Warn("natsjournal: watching the stream", "stream", j.cfg.Stream, "err", err)
	}))
	if err != nil {
		return j.unavailable("watching the stream", err)
	}
	defer cc.Stop()
	workers, err := j.Workers(ctx)
	if err != nil {
		return err
	}
	for _, w := range workers {
		notify(w, oplog.Listed)
	}
	<-ctx.Done()
	return nil
}

// Config returns the journal's configuration, defaults filled in.
func (j *Journal) Config() Config { return j.cfg }
