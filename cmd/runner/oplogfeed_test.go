package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/soplug/soplug/internal/oplog"
)

// feeder is a set of at-least-once HTTP senders, one per worker: each
// sends its next batch until it is answered 200, whatever happens to the
// runner in between (a kill, a refused connection), and now and then sends
// an acknowledged batch again, as a sender that lost the 200 would. It
// writes down what was acknowledged.
type feeder struct {
	workers []string
	batch   int
	mu      sync.Mutex
	acked   map[string]uint64 // worker -> the last acknowledged index
	resent  int               // deliberate resends of acknowledged batches, answered 200
	bad     []string          // answers no at-least-once sender may get
}

func newFeeder(n, batch int) *feeder {
	f := &feeder{batch: batch, acked: map[string]uint64{}}
	for i := range n {
		f.workers = append(f.workers, fmt.Sprintf("http-%02d", i))
	}
	return f
}

func (f *feeder) body(first uint64) []byte {
	var req oplog.AppendRequest
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range f.batch {
		idx := first + uint64(i)
		req.Entries = append(req.Entries, oplog.AppendEntry{Index: idx, Timestamp: ts, Kind: "invoke", Payload: fmt.Appendf(nil, "payload %d", idx)})
	}
	b, _ := json.Marshal(req)
	return b
}

// post sends one batch; ok is false when the runner did not answer.
func (f *feeder) post(client *http.Client, addr, worker string, first uint64) (code int, ok bool) {
	resp, err := client.Post("http://"+addr+"/v1/workers/"+worker+"/oplog", "application/json", bytes.NewReader(f.body(first)))
	if err != nil {
		return 0, false
	}
	resp.Body.Close()
	return resp.StatusCode, true
}

// run feeds the runner at addr until stop is closed or, with until, until
// every worker has acknowledged until entries.
func (f *feeder) run(addr string, stop <-chan struct{}, until uint64) {
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for wi, worker := range f.workers {
		wg.Go(func() {
			for round := 0; ; round++ {
				select {
				case <-stop:
					return
				default:
				}
				f.mu.Lock()
				last := f.acked[worker]
				f.mu.Unlock()
				if until > 0 && last >= until {
					return
				}
				first := last + 1
				resend := last > 0 && (round+wi)%4 == 0
				if resend { // the batch before, again
					first = last + 1 - uint64(f.batch)
				}
				code, ok := f.post(client, addr, worker, first)
				switch {
				case !ok || code == http.StatusServiceUnavailable:
					time.Sleep(5 * time.Millisecond) // a dead or draining runner: the same batch again
				case code == http.StatusOK:
					f.mu.Lock()
					if resend {
						f.resent++
					} else {
						f.acked[worker] = last + uint64(f.batch)
					}
					f.mu.Unlock()
				default:
					f.mu.Lock()
					f.bad = append(f.bad, fmt.Sprintf("%s %d: status %d", worker, first, code))
					f.mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
}

// check asserts that the recorder saw every acknowledged entry of the
// feeder's workers, an entry more than once only flagged, and none past
// the acknowledged ones.
func (f *feeder) check(t *testing.T, rec recorded) {
	t.Helper()
	assert.Empty(t, f.bad, "answers an at-least-once sender must not get")
	missing, twice, unacked := 0, 0, 0
	for _, w := range f.workers {
		for i := uint64(1); i <= f.acked[w]; i++ {
			n := rec.plain[w][i]
			if n+rec.flagged[w][i] == 0 {
				missing++
			}
			if n > 1 {
				twice++
			}
		}
		for i := range rec.plain[w] {
			if i > f.acked[w] {
				unacked++
			}
		}
		for i := range rec.flagged[w] {
			if i > f.acked[w] {
				unacked++
			}
		}
	}
	assert.Zero(t, missing, "acknowledged entries never delivered")
	assert.Zero(t, twice, "entries delivered twice without the redelivery flag")
	assert.Zero(t, unacked, "entries delivered that were never acknowledged")
	assert.Positive(t, f.resent, "resends of acknowledged batches")
}
