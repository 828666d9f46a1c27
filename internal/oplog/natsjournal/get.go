package natsjournal

// Reads from a stream's leader.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A stream with AllowDirect (a KV bucket always has it, and the journals'
// stream has it too) answers nats.go's GetMsg, GetLastMsgForSubject and
// KeyValue.Get from any replica, one that has not yet applied the latest
// messages included: seen under load on a three-node cluster, a worker
// woken for an append read nothing and went idle with the entry
// undelivered, and a cursor a runner had just written was read back as
// the one before ("the cursor moved"). So a journal's start and end and
// every cursor are read through $JS.API.STREAM.MSG.GET, which the
// stream's leader answers from what the stream has committed; only the
// messages before a journal's end come in batches from any replica
// (direct.go).

// apiPrefix is the JetStream API's subject prefix (jetstream.New's
// default, which New uses).
const apiPrefix = "$JS.API."

// msgGet is a STREAM.MSG.GET request: the message at Seq, the first at
// or after Seq on NextFor, or the last on LastFor.
type msgGet struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

// get asks stream's leader for a message: jetstream.ErrMsgNotFound when
// there is none; another error when the cluster does not answer or
// refuses.
func (j *Journal) get(ctx context.Context, stream string, req msgGet) (*jetstream.RawStreamMsg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	resp, err := j.nc.RequestWithContext(ctx, apiPrefix+"STREAM.MSG.GET."+stream, body)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("%w: JetStream did not answer (no leader for stream %s?)", err, stream)
		}
		return nil, err
	}
	var r struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject  string `json:"subject"`
			Sequence uint64 `json:"seq"`
			Header   []byte `json:"hdrs"`
			Data     []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return nil, fmt.Errorf("natsjournal: a STREAM.MSG.GET answer that is not JSON: %q", resp.Data)
	}
	if r.Error != nil {
		if r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, r.Error
	}
	if r.Message == nil {
		return nil, fmt.Errorf("natsjournal: a STREAM.MSG.GET answer without a message: %q", resp.Data)
	}
	m := &jetstream.RawStreamMsg{Subject: r.Message.Subject, Sequence: r.Message.Sequence, Data: r.Message.Data}
	if len(r.Message.Header) > 0 {
		if m.Header, err = nats.DecodeHeadersMsg(r.Message.Header); err != nil {
			return nil, fmt.Errorf("natsjournal: message %d of %s: its headers: %w", m.Sequence, stream, err)
		}
	}
	return m, nil
}

// kvGet reads key of the cursors' bucket from its stream's leader: its
// value and revision; jetstream.ErrKeyNotFound when it has none or was
// deleted.
func (j *Journal) kvGet(ctx context.Context, key string) ([]byte, uint64, error) {
	m, err := j.get(ctx, "KV_"+j.cfg.Bucket, msgGet{LastFor: "$KV." + j.cfg.Bucket + "." + key})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, jetstream.ErrKeyNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return nil, 0, jetstream.ErrKeyNotFound
	}
	return m.Data, m.Sequence, nil
}
