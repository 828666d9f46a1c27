package natsjournal

// Batched reads from any replica of the journals' stream.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A deliverer reads a worker's journal a batch at a time, thousands of
// entries in tens of messages. One STREAM.MSG.GET per message costs a
// round trip to the leader and a JSON answer whose data is base64 on
// both sides (0.8 ms per message of 100 entries of 256 B here, most of
// it encoding/json). A batched DIRECT.GET (nats-server 2.11 and later,
// on a stream with AllowDirect) returns up to a batch of messages as
// they are stored, in one request, followed by an end-of-batch status
// that says how many more the replica holds.
//
// Any replica may answer it, one that lags included. What a replica
// returns it has applied, so it is committed and in order; only its end
// may be short of the stream's. So a read that reaches the end of what
// the replica holds asks the leader (STREAM.MSG.GET) for the message
// after it, and goes on from the leader while there are any: a worker
// woken for an append never reads less than the leader has.

// hdrNumPending is the end-of-batch header that says how many messages
// the replica holds after those it sent.
const hdrNumPending = "Nats-Num-Pending"

// maxDirectBatch bounds the messages one batched DIRECT.GET asks for (its
// bytes are bounded by the read's maxBytes).
const maxDirectBatch = 256

// directReader sends batched DIRECT.GET requests and gathers their
// answers, through one subscription to an inbox prefix made when the
// Journal is: a subscription per request could miss the answer of a
// replica on another server that has not yet heard of it.
type directReader struct {
	nc     *nats.Conn
	stream string
	prefix string // <inbox>., each request's reply subject is prefix+id
	sub    *nats.Subscription
	next   atomic.Uint64

	mu      sync.Mutex
	waiting map[string]*directBatch
}

// directBatch is what one request has received.
type directBatch struct {
	msgs []*nats.Msg
	end  *nats.Msg // the end-of-batch or other status message
	done chan struct{}
}

func newDirectReader(nc *nats.Conn, stream string) (*directReader, error) {
	d := &directReader{nc: nc, stream: stream, prefix: nc.NewInbox() + ".", waiting: map[string]*directBatch{}}
	sub, err := nc.Subscribe(d.prefix+"*", d.receive)
	if err != nil {
		return nil, fmt.Errorf("natsjournal: subscribing to the answers of batched reads: %w", err)
	}
	// What waits here is bounded by the reads in flight (each at most its
	// maxBytes and one message more), not by the client's default limits
	// (64 MiB), past which it would drop answers of --oplog-parallel
	// reads at once, each then ending in a timeout.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, fmt.Errorf("natsjournal: %w", err)
	}
	d.sub = sub
	return d, nil
}

// receive files an answer under its request, and ends the request at a
// status message (204: end of batch; 404: nothing at or after the
// sequence; another: a refusal). Answers to a request that gave up are
// dropped.
func (d *directReader) receive(m *nats.Msg) {
	id := m.Subject[len(d.prefix):]
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.waiting[id]
	if b == nil {
		return
	}
	if m.Header.Get("Status") == "" {
		b.msgs = append(b.msgs, m)
		return
	}
	b.end = m
	delete(d.waiting, id)
	close(b.done)
}

// batch asks for up to n messages of subject from seq, about maxBytes in
// all (at least one message), from whichever replica answers. It returns
// them, and how many more of subject that replica holds after them;
// none and 0 when it holds nothing at or after seq.
func (d *directReader) batch(ctx context.Context, subject string, seq uint64, n, maxBytes int) ([]*jetstream.RawStreamMsg, uint64, error) {
	body, err := json.Marshal(struct {
		Seq      uint64 `json:"seq"`
		NextFor  string `json:"next_by_subj"`
		Batch    int    `json:"batch"`
		MaxBytes int    `json:"max_bytes"`
	}{seq, subject, n, maxBytes})
	if err != nil {
		return nil, 0, err
	}
	id := strconv.FormatUint(d.next.Add(1), 36)
	b := &directBatch{done: make(chan struct{})}
	d.mu.Lock()
	d.waiting[id] = b
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.waiting, id)
		d.mu.Unlock()
	}()
	if err := d.nc.PublishRequest(apiPrefix+"DIRECT.GET."+d.stream, d.prefix+id, body); err != nil {
		return nil, 0, err
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("natsjournal: a batched read of %s from %d: %w", subject, seq, ctx.Err())
	}
	switch st := b.end.Header.Get("Status"); st {
	case "204":
	case "503":
		return nil, 0, fmt.Errorf("%w: no replica of stream %s answers batched reads", nats.ErrNoResponders, d.stream)
	case "404":
		if len(b.msgs) == 0 {
			return nil, 0, nil
		}
		fallthrough
	default:
		return nil, 0, fmt.Errorf("natsjournal: a batched read of %s from %d: status %s %s", subject, seq, st, b.end.Header.Get("Description"))
	}
	more, err := strconv.ParseUint(b.end.Header.Get(hdrNumPending), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("natsjournal: a batched read of %s from %d: its end says %q pending", subject, seq, b.end.Header.Get(hdrNumPending))
	}
	out := make([]*jetstream.RawStreamMsg, len(b.msgs))
	after := seq - 1 // each message's sequence is past the one before
	for i, m := range b.msgs {
		s, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil || s <= after || m.Header.Get(jetstream.SubjectHeader) != subject {
			return nil, 0, fmt.Errorf("natsjournal: a batched read of %s from %d: message %d of the answer is of %q, sequence %q, not a sequence of it past %d",
				subject, seq, i, m.Header.Get(jetstream.SubjectHeader), m.Header.Get(jetstream.SequenceHeader), after)
		}
		out[i] = &jetstream.RawStreamMsg{Subject: subject, Sequence: s, Header: m.Header, Data: m.Data}
		after = s
	}
	return out, more, nil
}
