package natsjournal

// Publishing an append: its messages, one or an atomic batch.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
)

// isWrongLast reports whether err is the server refusing a message whose
// expected last subject sequence is not the subject's.
func isWrongLast(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && (ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// messages splits entries' records (zero timestamps recorded as now)
// into messages the server takes (its max_payload, less room for
// headers), each naming its first index and count. Their data is lent by
// a pool: freeMessages gives it back once they are published (nats.go
// copies what it sends).
func (j *Journal) messages(worker string, entries []contract.Entry, now time.Time) ([]*nats.Msg, error) {
	limit := int(j.nc.MaxPayload()) - 4096
	var out []*nats.Msg
	for start := 0; start < len(entries); {
		size, end := 0, start
		for end < len(entries) {
			r := int(oplog.RecordBytes(entries[end : end+1]))
			if r > limit {
				return nil, fmt.Errorf("%w: entry %d: its record is %d bytes, and the server takes messages of at most %d (its max_payload)",
					oplog.ErrEntry, entries[end].Index, r, j.nc.MaxPayload())
			}
			if size+r > limit {
				break
			}
			size += r
			end++
		}
		m := nats.NewMsg(j.subject(worker))
		m.Data = oplog.AppendRecords(getData(size), entries[start:end], now)
		m.Header.Set(hdrFirst, strconv.FormatUint(entries[start].Index, 10))
		m.Header.Set(hdrCount, strconv.Itoa(end-start))
		out = append(out, m)
		start = end
	}
	if len(out) > maxBatch {
		freeMessages(out)
		return nil, fmt.Errorf("%w: an append of %d messages of records, at most %d: send fewer entries at once", oplog.ErrEntry, len(out), maxBatch)
	}
	return out, nil
}

// dataPool holds message data for reuse: an append's records are
// about its request's size, the same from one request to the next.
var dataPool sync.Pool

// maxPooled is the largest data kept for reuse (a message's default
// max_payload); larger is left to the collector.
const maxPooled = 1 << 20

// getData returns an empty slice with room for size bytes.
func getData(size int) []byte {
	if p, ok := dataPool.Get().(*[]byte); ok && cap(*p) >= size {
		return (*p)[:0]
	}
	return make([]byte, 0, size)
}

// freeMessages gives msgs' data back for reuse; msgs must not be used
// after.
func freeMessages(msgs []*nats.Msg) {
	for _, m := range msgs {
		if cap(m.Data) <= maxPooled {
			d := m.Data[:0]
			dataPool.Put(&d)
		}
		m.Data = nil
	}
}

// maxBatch is the most messages of an atomic batch (the server's default
// limit).
const maxBatch = 1000

// publishBatch stores msgs as one atomic batch (NATS 2.12's
// Nats-Batch-Id, -Sequence and -Commit headers): all of them, or none. The
// first carries the expected last subject sequence. It returns the
// sequence of the last.
func (j *Journal) publishBatch(ctx context.Context, msgs []*nats.Msg, lastSeq uint64) (uint64, error) {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	for i, m := range msgs {
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		switch {
		case i == 0:
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(lastSeq, 10))
			resp, err := j.nc.RequestMsgWithContext(ctx, m) // the first is acknowledged: the batch is accepted
			if err != nil {
				return 0, err
			}
			if _, err := batchReply(resp, false); err != nil {
				return 0, err
			}
		case i < len(msgs)-1:
			if err := j.nc.PublishMsg(m); err != nil {
				return 0, err
			}
		}
	}
	last := msgs[len(msgs)-1]
	last.Header.Set("Nats-Batch-Commit", "1")
	resp, err := j.nc.RequestMsgWithContext(ctx, last)
	if err != nil {
		return 0, err
	}
	return batchReply(resp, true)
}

// batchReply reads the server's answer to a message of a batch: an error,
// or, for the commit, the stored sequence of the last message.
func batchReply(resp *nats.Msg, commit bool) (uint64, error) {
	if len(resp.Data) == 0 && !commit {
		return 0, nil
	}
	var r struct {
		Error *jetstream.APIError `json:"error"`
		Seq   uint64              `json:"seq"`
		Count int                 `json:"count"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return 0, fmt.Errorf("natsjournal: a batch answer that is not JSON: %q", resp.Data)
	}
	if r.Error != nil {
		return 0, r.Error
	}
	if commit && r.Seq == 0 {
		return 0, fmt.Errorf("natsjournal: a batch commit answered without a sequence: %s", resp.Data)
	}
	return r.Seq, nil
}
