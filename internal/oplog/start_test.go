package oplog_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/oplog"
)

// startBody is an append request of n entries from first, with first_index
// start (0: none).
func startBody(start uint64, first, n int) []byte {
	var req oplog.AppendRequest
	require := json.Unmarshal(appendBody(first, n, "x"), &req)
	if require != nil {
		panic(require)
	}
	req.FirstIndex = start
	b, _ := json.Marshal(req)
	return b
}

// TestExplicitStart: a worker attached mid-life says where its oplog
// starts; the processor sees it from there, the status shows that start,
// and a reopened oplog keeps it. What does not fit is a 409 that leaves no
// file.
func TestExplicitStart(t *testing.T) {
	dir, cursors := t.TempDir(), t.TempDir()
	j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: dir, MaxOpen: 1})
	defer j.Close()
	url, _ := serveAppender(t, oplog.AppenderConfig{Journal: j})
	rec := newRecorder()
	d, stop := run(t, oplog.Config{Dir: dir, CursorDir: cursors, Journal: j}, rec)
	defer stop()

	for _, tc := range []struct {
		name, worker string
		body         []byte
		expected     uint64
		msg          string
	}{
		{"a first append before its start", "a", startBody(1000, 999, 2), 1000, "entry index 999, expected 1000"},
		{"a first append after its start", "b", startBody(1000, 1001, 2), 1000, "entry index 1001, expected 1000"},
		{"a first append past 1 with no start", "c", startBody(0, 5, 2), 1, "entry index 5, expected 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, e, _ := postEntries(t, url, tc.worker, tc.body)
			require.Equal(t, http.StatusConflict, code, e.Error)
			assert.Equal(t, tc.expected, e.ExpectedIndex)
			assert.Contains(t, e.Error, tc.msg)
			_, err := os.Stat(filepath.Join(dir, tc.worker+oplog.Suffix))
			assert.ErrorIs(t, err, os.ErrNotExist, "a refused first append leaves no oplog")
		})
	}

	code, e, ok := postEntries(t, url, "mid", startBody(1000, 1000, 5))
	require.Equal(t, http.StatusOK, code, e.Error)
	assert.Equal(t, oplog.AppendResponse{Worker: "mid", Appended: 5, NextIndex: 1005}, ok)
	// Another worker closes mid's oplog (MaxOpen 1); it reopens at its start.
	code, e, _ = postEntries(t, url, "other", appendBody(1, 1, "x"))
	require.Equal(t, http.StatusOK, code, e.Error)
	code, e, _ = postEntries(t, url, "mid", startBody(1000, 1000, 5))
	assert.Equal(t, http.StatusOK, code, "the first append resent: %s", e.Error)
	code, e, _ = postEntries(t, url, "mid", startBody(0, 1005, 3))
	require.Equal(t, http.StatusOK, code, e.Error)
	code, e, _ = postEntries(t, url, "mid", startBody(7, 1008, 1))
	assert.Equal(t, http.StatusConflict, code)
	assert.Contains(t, e.Error, "mid.oplog starts at index 1000, not at the first_index 7")
	code, e, _ = postEntries(t, url, "mid", startBody(0, 999, 1))
	assert.Equal(t, http.StatusConflict, code, "before the start: %s", e.Error)
	assert.Contains(t, e.Error, "entry 999 is before the oplog's first index 1000")

	eventually(t, "mid delivered", func() bool { return rec.count("mid") == 8 })
	rec.mu.Lock()
	assert.Equal(t, seq(1000, 1007), rec.seen["mid"])
	rec.mu.Unlock()
	eventually(t, "mid acknowledged", func() bool { return status(d, "mid").Acked == 1007 })
	assert.EqualValues(t, 1000, status(d, "mid").First)
	assert.EqualValues(t, 1, status(d, "other").First)

	got, err := readAll(t, dir, "mid")
	require.NoError(t, err)
	require.Len(t, got, 8)
	assert.EqualValues(t, 1000, got[0].Index)
	code, e, _ = postEntries(t, url, "other", appendBody(2, 1, "x")) // the appender lets go of mid's
	require.Equal(t, http.StatusOK, code, e.Error)
	w, err := oplog.OpenWriterAt(dir, "mid", 5) // an existing oplog keeps its start
	require.NoError(t, err)
	assert.EqualValues(t, 1000, w.First())
	assert.EqualValues(t, 1008, w.Next())
	require.NoError(t, w.Close())
	_, err = oplog.OpenWriterAt(dir, "zero", 0)
	assert.ErrorIs(t, err, oplog.ErrEntry)
}

// TestStartHeader: an oplog's header that names its start, cut at every
// length, reads as torn; with a start of 0 or 1 it is corrupt.
func TestStartHeader(t *testing.T) {
	dir := t.TempDir()
	w, err := oplog.OpenWriterAt(dir, "w", 77)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	path := filepath.Join(dir, "w"+oplog.Suffix)
	full, err := os.ReadFile(path)
	require.NoError(t, err)
	for n := 1; n < len(full); n++ {
		require.NoError(t, os.WriteFile(path, full[:n], 0o644))
		_, err := oplog.OpenReader(dir, "w")
		require.ErrorIs(t, err, oplog.ErrTorn, "cut at %d of %d", n, len(full))
	}
	require.NoError(t, os.WriteFile(path, full, 0o644))
	r, err := oplog.OpenReader(dir, "w")
	require.NoError(t, err)
	assert.EqualValues(t, 77, r.First())
	require.NoError(t, r.Close())
	bad := append([]byte(nil), full...)
	bad[len(bad)-6] ^= 1 // inside the first index: the checksum no longer holds
	require.NoError(t, os.WriteFile(path, bad, 0o644))
	_, err = oplog.OpenReader(dir, "w")
	assert.ErrorIs(t, err, oplog.ErrCorrupt)
}
