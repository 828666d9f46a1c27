package natsjournal_test

import (
	"bytes"
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog/natsjournal"
	"github.com/soplug/soplug/internal/oplog/natsjournal/natstest"
)

// BenchmarkAppend appends 100 entries of 256 B (no timestamps, as most
// requests send them) to one of 64 workers per operation, one append at a
// time, on one real nats-server: the journal's own cost (records,
// message, publish, acknowledgement) and what it allocates. The server
// runs on the same cores, so the time is the round trip's; the bytes and
// allocations are the journal's alone.
func BenchmarkAppend(b *testing.B) {
	srv := natstest.Start(b)
	j, err := natsjournal.New(context.Background(), srv.Connect(b), natsjournal.Config{})
	require.NoError(b, err)
	payload := bytes.Repeat([]byte{'p'}, 256)
	entries := make([]contract.Entry, 100)
	next := make([]uint64, 64)
	b.SetBytes(int64(len(entries) * len(payload)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w := i % len(next)
		for k := range entries {
			entries[k] = contract.Entry{Index: next[w] + uint64(k) + 1, Kind: "invoke", Payload: payload}
		}
		n, err := j.Append(context.Background(), "bench-"+strconv.Itoa(w), 1, entries)
		if err != nil || n != len(entries) {
			b.Fatalf("append %d to worker %d: %d, %v", i, w, n, err)
		}
		next[w] += uint64(n)
	}
}
