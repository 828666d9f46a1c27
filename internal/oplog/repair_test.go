package oplog_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/oplog"
)

// recordOffsets returns where each record of worker's oplog starts.
func recordOffsets(t *testing.T, dir, worker string) []int64 {
	t.Helper()
	r, err := oplog.OpenReader(dir, worker)
	require.NoError(t, err)
	defer r.Close()
	var offs []int64
	for {
		off := r.Offset()
		es, err := r.Read(1, 1<<20)
		require.NoError(t, err)
		if len(es) == 0 {
			return offs
		}
		offs = append(offs, off)
	}
}

// TestRepair: a bit flipped in the middle of an oplog stops that worker's
// delivery at the record before it, marked corrupt with the file and
// offset; Repair cuts the oplog there, says what it dropped, and delivery
// goes on without a restart: the worker's appends resume after the last
// good entry and are delivered once.
func TestRepair(t *testing.T) {
	dir := t.TempDir()
	appendN(t, dir, "w", 20)
	appendN(t, dir, "ok", 3)
	offs := recordOffsets(t, dir, "w")
	path := oplog.Path(dir, "w")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	data[offs[7]+20] ^= 0x10 // inside entry 8
	require.NoError(t, os.WriteFile(path, data, 0o644))

	rec := newRecorder()
	d, stop := run(t, oplog.Config{Dir: dir}, rec)
	defer stop()
	eventually(t, "corrupt", func() bool { return status(d, "w").State == oplog.StateCorrupt })
	assert.Contains(t, status(d, "w").Error, "w.oplog at offset ")
	eventually(t, "the other worker delivered", func() bool { return rec.count("ok") == 3 })

	held, err := oplog.OpenWriter(dir, "ok")
	require.NoError(t, err)
	_, err = oplog.Repair(dir, "ok")
	assert.ErrorIs(t, err, oplog.ErrLocked, "a held oplog is not repaired")
	require.NoError(t, held.Close())
	_, err = oplog.Repair(dir, "ok")
	assert.ErrorIs(t, err, oplog.ErrNothingToRepair)
	_, err = oplog.Repair(dir, "nobody")
	assert.ErrorIs(t, err, os.ErrNotExist)

	got, err := oplog.Repair(dir, "w")
	require.NoError(t, err)
	assert.Equal(t, offs[7], got.Offset)
	assert.EqualValues(t, 7, got.LastGood)
	assert.Equal(t, int64(len(data))-offs[7], got.DroppedBytes)
	assert.Equal(t, 13, got.DroppedEntries, "entry 8 and the 12 after it")
	assert.Contains(t, got.Reason, "checksum mismatch")

	w, err := oplog.OpenWriter(dir, "w")
	require.NoError(t, err)
	assert.EqualValues(t, 8, w.Next(), "appends resume after the last good entry")
	require.NoError(t, w.Append(entries("w", 8, 5)...))
	require.NoError(t, w.Close())
	eventually(t, "delivery goes on", func() bool { return rec.count("w") == 12 })
	rec.mu.Lock()
	assert.Equal(t, seq(1, 12), rec.seen["w"])
	rec.mu.Unlock()
	eventually(t, "idle", func() bool { return status(d, "w").State == oplog.StateIdle })
}
