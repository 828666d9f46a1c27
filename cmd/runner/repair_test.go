package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/oplog"
)

// TestOplogRepair: runner oplog repair cuts a corrupt oplog, says what it
// dropped, and answers every other case with its status.
func TestOplogRepair(t *testing.T) {
	dir := t.TempDir()
	w, err := oplog.OpenWriter(dir, "w1")
	require.NoError(t, err)
	for i := range 10 {
		require.NoError(t, w.Append(contract.Entry{Index: uint64(i + 1), Timestamp: time.Unix(1, 0), Kind: "invoke", Payload: []byte("payload")}))
	}
	require.NoError(t, w.Close())
	path := filepath.Join(dir, "w1"+oplog.Suffix)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	data[len(data)-3*38+20] ^= 1 // inside entry 8 of records of 38 bytes
	require.NoError(t, os.WriteFile(path, data, 0o644))

	code, out, errs := runner(t, "oplog", "repair", "--oplog-dir", dir, "w1")
	require.Equal(t, exitcode.OK, code, errs)
	assert.Contains(t, out, "w1.oplog: cut at offset ")
	assert.Contains(t, out, "after entry 7, the last good one: dropped 114 bytes (3 entries)")
	assert.Contains(t, out, "the corruption: oplog: corrupt record: ")
	assert.Contains(t, out, "the worker's next append starts at index 8")
	assert.NotContains(t, out+errs, dir, "names the file, not the folder")

	for _, tc := range []struct {
		name string
		args []string
		code int
		text string
	}{
		{"repaired already", []string{"--oplog-dir", dir, "w1"}, exitcode.OK, "w1.oplog: no corrupt record, nothing changed"},
		{"no such worker", []string{"--oplog-dir", dir, "w2"}, exitcode.NoInput, "no such file or directory"},
		{"a bad worker ID", []string{"--oplog-dir", dir, "../w1"}, exitcode.NoInput, "invalid worker ID"},
		{"no folder", []string{"w1"}, exitcode.Usage, "usage: runner oplog repair"},
		{"no worker", []string{"--oplog-dir", dir}, exitcode.Usage, "usage: runner oplog repair"},
		{"json", []string{"--oplog-dir", dir, "--json", "w1"}, exitcode.OK, `"ok": false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runner(t, append([]string{"oplog", "repair"}, tc.args...)...)
			assert.Equal(t, tc.code, code, out+errs)
			assert.Contains(t, out+errs, tc.text)
		})
	}
	held, err := oplog.OpenWriter(dir, "w1")
	require.NoError(t, err)
	defer held.Close()
	code, _, errs = runner(t, "oplog", "repair", "--oplog-dir", dir, "w1")
	assert.Equal(t, exitcode.InUse, code)
	assert.Contains(t, errs, "stop the daemon (or the worker's writer) before repairing it")
}
