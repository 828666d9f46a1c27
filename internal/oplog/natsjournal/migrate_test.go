package natsjournal_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/natsjournal"
	"github.com/soplug/soplug/internal/oplog/natsjournal/natstest"
)

// TestMigrate: local journals (one attached mid-life) and a processor's
// cursors are copied to JetStream and verified entry by entry; run again,
// the migration copies nothing and verifies everything; a delivery on
// JetStream then goes on after the carried cursors, redelivering flagged
// what was in flight.
func TestMigrate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: dir})
	t.Cleanup(func() { src.Close() })
	add := func(w string, start uint64, n int) {
		es := make([]contract.Entry, n)
		for i := range es {
			es[i] = contract.Entry{Index: start + uint64(i), Kind: "k", Payload: []byte(w)}
		}
		_, err := src.Append(ctx, w, start, es)
		require.NoError(t, err)
	}
	add("a.b", 1, 2500)
	add("a_b", 1, 10)
	add("mid", 100, 50)
	// kindcount acknowledged 1200 of a.b with 1210 in flight, all of mid.
	rec := &recorder{seen: map[string][]uint64{}}
	fc, err := oplog.NewFileCursors(filepath.Join(dir, ".cursors", "kindcount"), 4)
	require.NoError(t, err)
	head, err := src.Head(ctx, "a.b")
	require.NoError(t, err)
	_, at, err := src.Read(ctx, "a.b", head, 1200, 1<<30)
	require.NoError(t, err)
	require.NoError(t, fc.Put(ctx, oplog.Cursor{Worker: "a.b"}, oplog.Cursor{Worker: "a.b", Acked: 1200, Offset: at.At, InFlight: 1210}))
	head, err = src.Head(ctx, "mid")
	require.NoError(t, err)
	_, at, err = src.Read(ctx, "mid", head, 50, 1<<30)
	require.NoError(t, err)
	require.NoError(t, fc.Put(ctx, oplog.Cursor{Worker: "mid"}, oplog.Cursor{Worker: "mid", Acked: 149, Offset: at.At, InFlight: 149}))

	srv := natstest.Start(t)
	dst, err := natsjournal.New(ctx, srv.Connect(t), natsjournal.Config{Owner: "migrate", LeaseTTL: 200 * time.Millisecond})
	require.NoError(t, err)
	cursors := func(name string) (oplog.CursorStore, error) { return src.Cursors(name) }
	for run := range 2 {
		got := map[string]oplog.MigrateResult{}
		require.NoError(t, oplog.Migrate(ctx, src, dst, []string{"kindcount"}, cursors, func(r oplog.MigrateResult) { got[r.Worker] = r }))
		want := map[string]int{"a.b": 2500, "a_b": 10, "mid": 50}
		for w, n := range want {
			assert.Equal(t, n, got[w].Verified, "run %d: %s verified", run, w)
			if run == 0 {
				assert.Equal(t, n, got[w].Copied, w)
			} else {
				assert.Zero(t, got[w].Copied, "run %d: %s: nothing copied twice", run, w)
			}
		}
		if run == 0 {
			assert.Equal(t, []string{"kindcount"}, got["a.b"].Cursors)
			assert.Empty(t, got["a_b"].Cursors, "nothing delivered")
		}
	}

	// Deliver on JetStream as kindcount, as another runner would, once the
	// migration's leases lapse.
	d, err := oplog.NewDeliverer(oplog.Config{Journal: mustJournal(t, srv, "runner"), BatchSize: 100}, "kindcount", "1.0.0", rec)
	require.NoError(t, err)
	stop, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(stop, ctx) }()
	waitFor(t, "the rest delivered", func() bool { return rec.count("a.b") == 1300 && rec.count("a_b") == 10 })
	cancel()
	require.NoError(t, <-done)
	assert.Equal(t, uint64(1201), rec.seen["a.b"][0], "after the cursor")
	assert.Equal(t, uint64(2500), rec.seen["a.b"][len(rec.seen["a.b"])-1])
	assert.Equal(t, 1, rec.redel, "the batch in flight (1201-1210), flagged")
	assert.Empty(t, rec.seen["mid"], "all acknowledged")
}

func mustJournal(t *testing.T, srv *natstest.Server, owner string) *natsjournal.Journal {
	t.Helper()
	j, err := natsjournal.New(context.Background(), srv.Connect(t), natsjournal.Config{Owner: owner})
	require.NoError(t, err)
	return j
}
