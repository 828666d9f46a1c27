package natsjournal_test

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog/natsjournal"
	"github.com/soplug/soplug/internal/oplog/natsjournal/natstest"
)

// TestReadsInBatches: a worker's journal of 600 single-entry messages,
// one of five entries and another worker's messages between them reads
// back whole and in order, at once (past several batches), a few entries
// at a time (stopping inside a message) and one entry at a time, both on
// a stream the journal made (batched DIRECT.GETs from any replica) and on
// one made by hand without direct gets (one STREAM.MSG.GET per message,
// said once in the log). The requests the reader sends show which: the
// whole journal takes a handful on the first (batches of 256 messages, and
// the end from the leader), one per message on the second.
func TestReadsInBatches(t *testing.T) {
	for _, tc := range []struct {
		name          string
		premade       bool // the stream made by hand, without AllowDirect
		maxAPIPerRead uint64
		minAPIPerRead uint64
	}{
		{"stream with direct gets", false, 4, 3},
		{"stream without direct gets", true, 1 << 20, 601},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := natstest.Start(t)
			ctx := context.Background()
			nc := srv.Connect(t)
			js, err := jetstream.New(nc)
			require.NoError(t, err)
			if tc.premade {
				_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SOPLUG_OPLOG", Subjects: []string{"soplug.oplog.>"},
					Storage: jetstream.FileStorage, AllowAtomicPublish: true})
				require.NoError(t, err)
			}
			var log bytes.Buffer
			j, err := natsjournal.New(ctx, nc, natsjournal.Config{Logger: slog.New(slog.NewTextHandler(&log, nil))})
			require.NoError(t, err)
			if tc.premade {
				assert.Contains(t, log.String(), "does not allow direct gets")
			} else {
				assert.NotContains(t, log.String(), "direct")
			}

			var want []contract.Entry
			others := map[string]uint64{}
			add := func(worker string, n int) {
				es := make([]contract.Entry, n)
				for k := range es {
					es[k] = contract.Entry{Index: uint64(len(want) + k + 1), Kind: "k", Payload: []byte{byte(len(want) + k)}}
				}
				if worker == "w" {
					want = append(want, es...)
				} else {
					others[worker]++
					es[0].Index = others[worker]
				}
				_, err := j.Append(ctx, worker, 1, es)
				require.NoError(t, err)
			}
			for i := range 600 {
				add("w", 1)
				if i == 300 {
					add("w", 5)
				}
				if i%7 == 0 {
					add("other"+string(rune('a'+i%26)), 1)
				}
			}
			// A fresh journal: nothing known of the worker in this process.
			rc := srv.Connect(t)
			r, err := natsjournal.New(ctx, rc, natsjournal.Config{})
			require.NoError(t, err)
			head, err := r.Head(ctx, "w")
			require.NoError(t, err)

			before := rc.Stats().OutMsgs
			got, end, err := r.Read(ctx, "w", head, 1<<20, 1<<30)
			require.NoError(t, err)
			requests := rc.Stats().OutMsgs - before
			assert.Equal(t, indexes(want), indexes(got), "all at once")
			assert.Equal(t, payloads(want), payloads(got))
			assert.LessOrEqual(t, requests, tc.maxAPIPerRead, "requests to read the whole journal")
			assert.GreaterOrEqual(t, requests, tc.minAPIPerRead, "requests to read the whole journal")
			more, _, err := r.Read(ctx, "w", end, 100, 1<<20)
			require.NoError(t, err)
			assert.Empty(t, more, "nothing after the end")

			for _, page := range []struct{ limit, maxBytes int }{{7, 1 << 20}, {1000, 3}, {1, 1 << 20}} {
				var paged []contract.Entry
				at := head
				for len(paged) < len(want) {
					got, next, err := r.Read(ctx, "w", at, page.limit, page.maxBytes)
					require.NoError(t, err)
					require.NotEmpty(t, got, "a read from %+v with limit %d, %d bytes", at, page.limit, page.maxBytes)
					require.LessOrEqual(t, len(got), page.limit)
					if page.maxBytes < 1<<20 {
						require.LessOrEqual(t, len(got), page.maxBytes, "one byte per entry: at most maxBytes of them")
					}
					paged = append(paged, got...)
					at = next
				}
				assert.Equal(t, indexes(want), indexes(paged), "read %d entries, %d bytes at a time", page.limit, page.maxBytes)
			}
		})
	}
}

func indexes(es []contract.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Index
	}
	return out
}

func payloads(es []contract.Entry) [][]byte {
	out := make([][]byte, len(es))
	for i, e := range es {
		out[i] = e.Payload
	}
	return out
}

// TestReadsPastAFrozenReplica: on a three-node cluster whose one follower
// is frozen (SIGSTOP: its routes stay up, and it answers nothing), every
// read through the other follower returns the whole journal, none of them
// waiting out the frozen node.
func TestReadsPastAFrozenReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster")
	}
	cl := natstest.StartCluster(t, 3)
	ctx := context.Background()
	w, err := natsjournal.New(ctx, cl.Connect(t), natsjournal.Config{Replicas: 3})
	require.NoError(t, err)
	for i := range 20 {
		_, err := w.Append(ctx, "w", 0, []contract.Entry{{Index: uint64(i + 1), Kind: "k", Payload: []byte("p")}})
		require.NoError(t, err)
	}
	js, err := jetstream.New(cl.Connect(t))
	require.NoError(t, err)
	s, err := js.Stream(ctx, "SOPLUG_OPLOG")
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var frozen, via *natstest.Node
	for _, n := range cl.Nodes {
		switch {
		case n.Name == info.Cluster.Leader:
		case frozen == nil:
			frozen = n
		default:
			via = n
		}
	}
	require.NotNil(t, via)
	require.NotNil(t, frozen)
	// Reads that waited for the frozen node would end in ErrUnavailable.
	r, err := natsjournal.New(ctx, cl.ConnectTo(t, via), natsjournal.Config{Replicas: 3, Timeout: 2 * time.Second})
	require.NoError(t, err)
	head, err := r.Head(ctx, "w")
	require.NoError(t, err)

	cl.Pause(frozen)
	defer cl.Resume(frozen)
	for i := range 12 {
		got, _, err := r.Read(ctx, "w", head, 1000, 1<<20)
		require.NoError(t, err, "read %d with %s frozen", i, frozen.Name)
		assert.Len(t, got, 20, "read %d", i)
	}
}
