package oplog_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
)

// decodeV1 decodes an append body as encoding/json does, with unknown
// fields disallowed and nothing after the object, then applies the
// journal's entry checks: what the Appender did before it had a decoder of
// its own.
func decodeV1(body []byte) ([]contract.Entry, uint64, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req oplog.AppendRequest
	if err := dec.Decode(&req); err != nil {
		return nil, 0, err
	}
	if err := dec.Decode(new(json.RawMessage)); !errors.Is(err, io.EOF) {
		return nil, 0, errors.New("more after the object")
	}
	out := make([]contract.Entry, len(req.Entries))
	for i, e := range req.Entries {
		out[i] = contract.Entry{WorkerID: "w", Index: e.Index, Timestamp: e.Timestamp, Kind: e.Kind, Payload: e.Payload}
	}
	return out, req.FirstIndex, checked(out)
}

// checked applies the rules an append's entries meet after decoding.
func checked(es []contract.Entry) error {
	if len(es) == 0 {
		return errors.New("no entries")
	}
	for i := range es {
		e := es[i]
		if e.Timestamp.IsZero() {
			e.Timestamp = t0 // stamped by the journal
		}
		if err := oplog.CheckEntry("w", &e); err != nil {
			return err
		}
	}
	return nil
}

// decodeOurs decodes as the Appender does, reading the body in pieces of
// one byte when slow (every boundary of its read buffer).
func decodeOurs(body []byte, size int64, slow bool) ([]contract.Entry, uint64, error) {
	var r io.Reader = bytes.NewReader(body)
	if slow {
		r = iotest.OneByteReader(r)
	}
	es, first, err := oplog.DecodeAppend(r, size)
	if err != nil {
		return nil, 0, err
	}
	return es, first, checked(es)
}

// sameDecoding asserts that the Appender's decoder accepts what
// encoding/json accepts, with the same entries, and refuses what it
// refuses.
func sameDecoding(t *testing.T, body []byte) {
	t.Helper()
	want, wantFirst, wantErr := decodeV1(body)
	for _, v := range []struct {
		size int64
		slow bool
	}{{int64(len(body)), false}, {-1, false}, {-1, true}} {
		got, first, err := decodeOurs(body, v.size, v.slow)
		if wantErr != nil {
			if err == nil {
				t.Fatalf("%q (size %d): accepted, encoding/json refuses it: %v", body, v.size, wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q (size %d): refused (%v), encoding/json accepts it", body, v.size, err)
		}
		if first != wantFirst || len(got) != len(want) {
			t.Fatalf("%q: first %d and %d entries, encoding/json: %d and %d", body, first, len(got), wantFirst, len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Index != w.Index || g.Kind != w.Kind || !g.Timestamp.Equal(w.Timestamp) || !bytes.Equal(g.Payload, w.Payload) || g.WorkerID != w.WorkerID {
				t.Fatalf("%q: entry %d is %+v, encoding/json: %+v", body, i, g, w)
			}
		}
	}
}

var decodeSeeds = []string{
	`{"entries":[{"index":1,"kind":"invoke","payload":"aGk="}]}`,
	`{"entries":[{"index":1,"timestamp":"2026-12-03T10:00:00.123456789+01:00","kind":"k","payload":""}],"first_index":1}`,
	` {"first_index":7, "entries" : [ {"index":7}, {"index":8,"kind":null,"payload":null,"timestamp":null} ] } ` + "\n",
	`{"Entries":[{"INDEX":1,"Kind":"k"}]}`,
	`{"entries":[{"index":1,"kind":"a\u00e9\n\"\\","payload":"aG\/k="}]}`,
	`{"entries":[{"index":1,"kind":"a"},{"index":2,"kind":"b"}],"entries":[{"index":3}]}`,
	`{"entries":[{"index":1,"payload":"aGk=","payload":"eA=="}]}`,
	`{"entries":[null,{"index":2}]}`,
	`{"entries":null}`, `null`, `{}`, `{"entries":[]}`, `[]`, `{"entries":{}}`,
	`{"entries":[{"index":1.0}]}`, `{"entries":[{"index":-1}]}`, `{"entries":[{"index":01}]}`,
	`{"entries":[{"index":18446744073709551615}]}`, `{"entries":[{"index":18446744073709551616}]}`,
	`{"entries":[{"index":1e2}]}`, `{"entries":[{"index":"1"}]}`, `{"entries":[{"index":true}]}`,
	`{"entries":[{"index":1,"extra":1}]}`, `{"entries":[{"index":1}],"extra":null}`,
	`{"entries":[{"index":1,"payload":"aGk"}]}`, `{"entries":[{"index":1,"payload":"a=Gk"}]}`,
	`{"entries":[{"index":1,"payload":"aGk=\r\n"}]}`, "{\"entries\":[{\"index\":1,\"payload\":\"aGk=\r\n\"}]}",
	"{\"entries\":[{\"index\":1,\"payload\":\"aG\nk=\"}]}", "{\"entries\":[{\"index\":1,\"payload\":\"QUFB\nQUFB\n\"}]}", `{"entries":[{"index":1,"payload":"aG\u0041k"}]}`,
	`{"entries":[{"index":1,"payload":"` + "\xff" + `"}]}`, `{"entries":[{"index":1,"kind":"` + "\xff\xfe" + `"}]}`,
	`{"entries":[{"index":1,"timestamp":"2026-13-01T00:00:00Z"}]}`, `{"entries":[{"index":1,"timestamp":5}]}`,
	`{"entries":[{"index":1,"timestamp":"1600-01-01T00:00:00Z"}]}`,
	`{"entries":[{"index":1}]}{"entries":[]}`, `{"entries":[{"index":1}]} x`, `{"entries":[{"index":1}]`,
	`{"entries":[{"index":1},]}`, `{"entries":[{"index":1}],}`, `{"entries":[{"index":1} {"index":2}]}`,
	`{"entries":[{"index":nul}]}`, `{"entries":[{"index":nullx}]}`, `{"entries":[{"index":1,"kind":"` + "\t" + `"}]}`,
	`{"entries":[{"index":1,"kind":"\x"}]}`, `{"entries":[{"index":1,"kind":"\u12"}]}`, "\ufeff{}",
	`{"entries":[{"index":1,"kind":"` + strings.Repeat("k", 256) + `"}]}`,
	`{"entries":[{"index":1,"payload":"` + strings.Repeat("QUFB", 30000) + `"}]}`,
	`{"entries":[{"index":1,"payload":"` + strings.Repeat("QUFB", 30000) + `\/"}]}`,
}

// TestDecodeAppend: the Appender's decoder and encoding/json agree on the
// cases above, however the body arrives.
func TestDecodeAppend(t *testing.T) {
	for _, s := range decodeSeeds {
		sameDecoding(t, []byte(s))
	}
}

// FuzzDecodeAppend: on any body the two decoders agree.
func FuzzDecodeAppend(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { sameDecoding(t, body) })
}

// TestDecodeAppendLimits: more entries than one append may hold, and a
// kind far past its limit, are refused while reading, naming the limit.
func TestDecodeAppendLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"entries":[`)
	for i := range oplog.MaxAppendEntries + 1 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{}`)
	}
	b.WriteString(`]}`)
	_, _, err := oplog.DecodeAppend(strings.NewReader(b.String()), -1)
	require.ErrorIs(t, err, oplog.ErrEntry)
	assert.Contains(t, err.Error(), "more than 65536 entries")

	_, _, err = oplog.DecodeAppend(strings.NewReader(`{"entries":[{"kind":"`+strings.Repeat("k", 5000)+`"}]}`), -1)
	require.ErrorIs(t, err, oplog.ErrEntry)
	assert.Contains(t, err.Error(), "at most 255")
}
