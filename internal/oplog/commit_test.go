package oplog_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
)

// indexes returns the indexes of es.
func indexes(es []contract.Entry) []uint64 {
	out := []uint64{}
	for _, e := range es {
		out = append(out, e.Index)
	}
	return out
}

// TestGroupCommit: appends to one worker that arrive while a sync is under
// way are written behind it and share the next sync; delivery reads none of
// them before that sync; a failed sync fails every append it was to cover
// and those written during it, and leaves the oplog at what was synced.
func TestGroupCommit(t *testing.T) {
	eio := syscall.EIO
	for _, tc := range []struct {
		name         string
		first, later error  // the results of the first sync and of those after
		wantOK       []bool // per append of 1, 2..5, and the resend of 1..3
		wantSyncs    int32
		wantHeld     []uint64
	}{
		{"all synced", nil, nil, []bool{true, true, true, true, true, true}, 2, seq(1, 5)},
		{"the first sync fails", eio, nil, []bool{false, false, false, false, false, false}, 1, []uint64{}},
		{"the shared sync fails", nil, eio, []bool{true, false, false, false, false, false}, 2, []uint64{1}},
	} {
		for _, mode := range []oplog.SyncMode{oplog.SyncFile, oplog.SyncFileSystem} {
			t.Run(mode.String()+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: dir, Sync: mode})
				t.Cleanup(func() { j.Close() })
				ctx := context.Background()
				var syncs atomic.Int32
				inSync, release := make(chan struct{}), make(chan struct{})
				var failing atomic.Bool
				failing.Store(true)
				j.SetFault(func(_, op string) error {
					if op != "sync" || !failing.Load() {
						return nil
					}
					if syncs.Add(1) == 1 {
						close(inSync)
						<-release
						return tc.first
					}
					return tc.later
				})
				es := entries("g", 1, 5)
				errs := make([]error, 6)
				var wg sync.WaitGroup
				wg.Go(func() { _, errs[0] = j.Append(ctx, "g", 0, es[0:1]) })
				<-inSync
				// Appends 2 to 5 are written, one after the other, while the
				// first sync is under way; each then waits for a sync.
				for i := 1; i < 5; i++ {
					wg.Go(func() { _, errs[i] = j.Append(ctx, "g", 0, es[i:i+1]) })
					eventually(t, "append written", func() bool { return j.Waiting("g") == i+1 })
				}
				// A resend of entries written and not synced waits for their sync.
				wg.Go(func() { _, errs[5] = j.Append(ctx, "g", 0, entries("g", 1, 3)) })
				eventually(t, "resend waiting", func() bool { return j.Waiting("g") == 6 })
				got, err := readAll(t, dir, "g") // the file, past the watermark
				require.NoError(t, err)
				assert.Equal(t, seq(1, 5), indexes(got), "written during the first sync")

				head, err := j.Head(ctx, "g")
				require.NoError(t, err)
				seen, _, err := j.Read(ctx, "g", head, 100, 1<<20)
				require.NoError(t, err)
				assert.Empty(t, seen, "delivery reads nothing that is not synced")

				close(release)
				wg.Wait()
				for i, ok := range tc.wantOK {
					if ok {
						assert.NoError(t, errs[i], "append %d", i)
					} else {
						assert.ErrorIs(t, errs[i], eio, "append %d", i)
					}
				}
				assert.Equal(t, tc.wantSyncs, syncs.Load(), "syncs")
				if len(tc.wantHeld) == 0 {
					// A worker's first append that failed leaves no file.
					_, err = j.Head(ctx, "g")
					assert.ErrorIs(t, err, oplog.ErrNoJournal)
				} else {
					got, err = readAll(t, dir, "g")
					require.NoError(t, err)
					assert.Equal(t, tc.wantHeld, indexes(got), "what the file holds")
					seen, _, err = j.Read(ctx, "g", head, 100, 1<<20)
					require.NoError(t, err)
					assert.Equal(t, tc.wantHeld, indexes(seen), "what delivery reads")
				}

				// The same appends, sent again, succeed.
				failing.Store(false)
				n, err := j.Append(ctx, "g", 0, es)
				require.NoError(t, err)
				assert.Equal(t, 5-len(tc.wantHeld), n)
				got, err = readAll(t, dir, "g")
				require.NoError(t, err)
				assert.Equal(t, seq(1, 5), indexes(got))
			})
		}
	}
}

// TestSyncEachAppend: with group commit off, each append is synced on its
// own, under the writer's lock.
func TestSyncEachAppend(t *testing.T) {
	j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: t.TempDir(), Sync: oplog.SyncEachAppend})
	t.Cleanup(func() { j.Close() })
	var syncs atomic.Int32
	j.SetFault(func(_, op string) error {
		if op == "sync" {
			syncs.Add(1)
		}
		return nil
	})
	var wg sync.WaitGroup
	var failed atomic.Int32
	for c := range 8 {
		wg.Go(func() {
			// Each client resends from 1 what it has seen acked, plus one.
			for i := 1; i <= 20; i++ {
				_, err := j.Append(context.Background(), "s", 0, entries("s", 1, c+i))
				var oe *oplog.OrderError
				if err != nil && !errors.As(err, &oe) {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	assert.Zero(t, failed.Load())
	n, err := j.Append(context.Background(), "s", 0, entries("s", 1, 27))
	require.NoError(t, err)
	assert.Zero(t, n, "all 27 entries are there")
	assert.LessOrEqual(t, syncs.Load(), int32(27), "at most one sync per append that wrote")
}

// TestGroupCommitAcrossWorkers: with SyncFileSystem, the appends to other
// workers written while a syncfs runs share the next one; when that one
// fails, each of them fails and its oplog is cut back, while the appends
// the first covered stand.
func TestGroupCommitAcrossWorkers(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(map[bool]string{false: "synced", true: "the shared syncfs fails"}[fail], func(t *testing.T) {
			dir := t.TempDir()
			j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: dir, Sync: oplog.SyncFileSystem})
			t.Cleanup(func() { j.Close() })
			ctx := context.Background()
			inSync, release := make(chan struct{}), make(chan struct{})
			var rounds atomic.Int32
			j.SetSyncFault(func() error {
				if rounds.Add(1) == 1 {
					close(inSync)
					<-release
					return nil
				}
				if fail {
					return syscall.EIO
				}
				return nil
			})
			var wg sync.WaitGroup
			errs := make([]error, 9)
			wg.Go(func() { _, errs[0] = j.Append(ctx, "first", 0, entries("first", 1, 3)) })
			<-inSync
			for i := 1; i <= 8; i++ {
				w := fmt.Sprintf("w%d", i)
				wg.Go(func() { _, errs[i] = j.Append(ctx, w, 0, entries(w, 1, 2)) })
				eventually(t, "append written", func() bool { return j.Waiting(w) == 1 })
			}
			close(release)
			wg.Wait()
			assert.EqualValues(t, 2, j.SyncRounds(), "one syncfs for the eight")
			require.NoError(t, errs[0])
			got, err := readAll(t, dir, "first")
			require.NoError(t, err)
			assert.Equal(t, seq(1, 3), indexes(got))
			for i := 1; i <= 8; i++ {
				w := fmt.Sprintf("w%d", i)
				if !fail {
					assert.NoError(t, errs[i])
					got, err := readAll(t, dir, w)
					require.NoError(t, err)
					assert.Equal(t, seq(1, 2), indexes(got), w)
					continue
				}
				assert.ErrorIs(t, errs[i], syscall.EIO, w)
				_, err := j.Head(ctx, w)
				assert.ErrorIs(t, err, oplog.ErrNoJournal, "%s: a first append that failed leaves no file", w)
			}
		})
	}
}

// TestSyncModes: the modes' names read back, a bad one is an error naming
// it and the choices, and SyncAuto picks syncfs on a local file system.
func TestSyncModes(t *testing.T) {
	for _, m := range []oplog.SyncMode{oplog.SyncAuto, oplog.SyncFileSystem, oplog.SyncFile, oplog.SyncEachAppend} {
		got, err := oplog.ParseSyncMode(m.String())
		require.NoError(t, err)
		assert.Equal(t, m, got)
	}
	for _, bad := range []string{"", "fsync", "FILE", "auto "} {
		_, err := oplog.ParseSyncMode(bad)
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), strconv.Quote(bad))
		assert.Contains(t, err.Error(), "auto, filesystem, file, each-append")
	}

	j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: t.TempDir()})
	t.Cleanup(func() { j.Close() })
	assert.Equal(t, oplog.SyncAuto, j.SyncMode(), "not chosen before the folder exists")
	_, err := j.Append(context.Background(), "w", 0, entries("w", 1, 1))
	require.NoError(t, err)
	assert.Equal(t, oplog.SyncFileSystem, j.SyncMode(), "a local file system")
}
