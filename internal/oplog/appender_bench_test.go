package oplog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/journaltest"
)

// BenchmarkAppendHandler is the append front end's work for one request of
// 100 entries of 256 B (bench/run's HTTP append shape, with a timestamp
// each) without a connection: decoding, checks and the answer. Each op
// appends the next 100 entries of one worker: to an in-memory journal
// that keeps a copy of each entry (memory), or to one that makes their
// records, as the file and NATS journals do, and keeps nothing (records).
func BenchmarkAppendHandler(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		benchAppendHandler(b, func() oplog.Journal { return journaltest.NewMemory() })
	})
	b.Run("records", func(b *testing.B) {
		benchAppendHandler(b, func() oplog.Journal { return &recordsJournal{Memory: journaltest.NewMemory()} })
	})
}

// recordsJournal makes an append's records and keeps nothing of them.
type recordsJournal struct {
	*journaltest.Memory
	buf []byte
}

func (j *recordsJournal) Append(_ context.Context, _ string, _ uint64, entries []contract.Entry) (int, error) {
	j.buf = oplog.AppendRecords(j.buf[:0], entries, time.Now())
	return len(entries), nil
}

func benchAppendHandler(b *testing.B, journal func() oplog.Journal) {
	const perRequest, size = 100, 256
	a := oplog.NewAppender(oplog.AppenderConfig{Journal: journal()})
	payload := bytes.Repeat([]byte{0xa5}, size)
	bodies := make([][]byte, 1000)
	for i := range bodies {
		req := oplog.AppendRequest{}
		for k := range perRequest {
			req.Entries = append(req.Entries, oplog.AppendEntry{Index: uint64(i*perRequest + k + 1), Kind: "call", Payload: payload})
		}
		var err error
		if bodies[i], err = json.Marshal(req); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(bodies[0])))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if n == len(bodies) { // a new worker
			a = oplog.NewAppender(oplog.AppenderConfig{Journal: journal()})
			n = 0
		}
		r := httptest.NewRequest("POST", "/v1/workers/w/oplog", bytes.NewReader(bodies[n]))
		r.SetPathValue("id", "w")
		w := httptest.NewRecorder()
		a.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("append %d: %d %s", n, w.Code, strings.TrimSpace(w.Body.String()))
		}
		n++
	}
	b.ReportMetric(float64(b.N*perRequest)/b.Elapsed().Seconds(), "entries/s")
}
