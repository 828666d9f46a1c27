package natsjournal_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/natsjournal"
	"github.com/soplug/soplug/internal/oplog/natsjournal/natstest"
)

// BenchmarkRead reads one worker's journal of 50 appends of 100 entries
// of 256 B from its start, as a deliverer's batch does (oplog's default
// batch: 5,000 entries, 4 MiB), on one real nats-server and on a
// three-node cluster, all on the same cores: the round trips of the
// reads and the decoding of what they return.
func BenchmarkRead(b *testing.B) {
	for _, tc := range []struct {
		name     string
		replicas int
		connect  func(b *testing.B) *nats.Conn
	}{
		{"R1", 1, func(b *testing.B) *nats.Conn { return natstest.Start(b).Connect(b) }},
		{"R3", 3, func(b *testing.B) *nats.Conn { return natstest.StartCluster(b, 3).Connect(b) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			j, err := natsjournal.New(ctx, tc.connect(b), natsjournal.Config{Replicas: tc.replicas})
			require.NoError(b, err)
			payload := bytes.Repeat([]byte{'p'}, 256)
			entries := make([]contract.Entry, 100)
			const appends = 50
			for a := range appends {
				for k := range entries {
					entries[k] = contract.Entry{Index: uint64(a*len(entries) + k + 1), Kind: "invoke", Payload: payload}
				}
				_, err := j.Append(ctx, "bench", 1, entries)
				require.NoError(b, err)
			}
			head, err := j.Head(ctx, "bench")
			require.NoError(b, err)
			b.SetBytes(appends * int64(len(entries)*len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				got, _, err := j.Read(ctx, "bench", head, oplog.DefaultBatchSize, oplog.DefaultMaxBatchBytes)
				if err != nil || len(got) != appends*len(entries) {
					b.Fatalf("read %d entries, %v", len(got), err)
				}
			}
		})
	}
}
