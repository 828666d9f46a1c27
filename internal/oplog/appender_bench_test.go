package oplog_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/journaltest"
)

// BenchmarkAppendHandler is the append front end's work for one request of
// 100 entries of 256 B (bench/run's HTTP append shape) over an in-memory
// journal, without a connection: decoding, checks and the answer. Each op
// appends the next 100 entries of one worker.
func BenchmarkAppendHandler(b *testing.B) {
	const perRequest, size = 100, 256
	mem := journaltest.NewMemory()
	a := oplog.NewAppender(oplog.AppenderConfig{Journal: mem})
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
			mem = journaltest.NewMemory()
			a = oplog.NewAppender(oplog.AppenderConfig{Journal: mem})
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
