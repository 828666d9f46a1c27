package main

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/exitcode"
)

// snapshot is every file under dir with a digest of its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Type()&fs.ModeSocket != 0 {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out[path] = fmt.Sprintf("%x", sha256.Sum256(b))
		return nil
	}))
	return out
}

// TestSecondRunnerOnOneStateDir: while one runner owns a state and oplog
// folder, a second one (on the same address, or on its own) exits 73 with
// the owner's PID and changes nothing in either folder; the first goes on
// serving, and once it has stopped the folders are free.
func TestSecondRunnerOnOneStateDir(t *testing.T) {
	t.Parallel()
	state, oplogs := t.TempDir(), t.TempDir()
	first := start(t, examples, "--state-dir", state, "--oplog-dir", oplogs)
	addr := <-first.addr
	first.waitLog(t, `msg=ready`)
	before := map[string]map[string]string{state: snapshot(t, state), oplogs: snapshot(t, oplogs)}
	pid := strconv.Itoa(first.cmd.Process.Pid)

	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"same address, same folders", []string{"--listen", addr, "--state-dir", state, "--oplog-dir", oplogs}},
		{"own address, same state folder", []string{"--state-dir", state}},
		{"own address, same oplog folder", []string{"--state-dir", t.TempDir(), "--oplog-dir", oplogs}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			second := start(t, examples, tc.flags...)
			assert.Equal(t, exitcode.InUse, second.exitCode(t), second.text())
			assert.Regexp(t, `is in use by PID `+pid+`; one runner at a time may use it`, second.text())
			assert.NotContains(t, second.text(), "msg=candidate", "it stops before selecting anything")
			for dir, files := range before {
				assert.Equal(t, files, snapshot(t, dir), "%s is unchanged", dir)
			}
			assert.Equal(t, http.StatusOK, getJSON(t, "http://"+addr+"/healthz", nil), "the first runner still serves")
		})
	}

	require.NoError(t, first.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, first.exitCode(t), first.text())
	next := start(t, examples, "--state-dir", state, "--oplog-dir", oplogs)
	next.waitLog(t, `msg=ready`)
	require.NoError(t, next.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, next.exitCode(t), next.text())
}
