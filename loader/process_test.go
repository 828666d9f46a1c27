package loader_test

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/wasm"
	"github.com/soplug/soplug/loader"
)

// TestProcessCandidates: executables take part in the same newest-first
// fallback as .so files, and every way an executable fails is a reason.
func TestProcessCandidates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	install(t, dir, "good-1.0.0", "p_v1.0.0.so")
	install(t, dir, "good-1.2.0.exec", "p_v1.2.0")                                  // selected: out of process
	install(t, dir, "sleeper.exec", "p_v1.3.0")                                     // never completes the handshake
	install(t, dir, "otherprotocol.exec", "p_v1.4.0")                               // go-plugin protocol 2
	install(t, dir, "good-1.0.0", "p_v1.5.0")                                       // a .so, not an executable
	write(t, dir, "p_v1.6.0", []byte("#!/bin/sh\n"))                                // not ELF
	install(t, dir, "faulty.exec", "p_v1.7.0")                                      // Version() says 1.0.0
	require.NoError(t, os.Chmod(install(t, dir, "faulty.exec", "p_v1.8.0"), 0o644)) // not executable
	data, err := os.ReadFile(fixture(t, "faulty.exec"))
	require.NoError(t, err)
	write(t, dir, "p_v1.9.0", data[:len(data)/2]) // a copy cut short

	sel, err := loader.New(loader.Config{Dir: dir, Prober: loader.Prober{Timeout: 2 * time.Second}}).Check(context.Background())
	require.NoError(t, err)
	got := map[string]string{}
	for _, c := range sel.Candidates {
		got[c.File] = strings.Join([]string{string(c.Verdict), string(c.Stage), string(c.Backend), loader.Plain(c.Reason)}, " | ")
	}
	want := map[string]string{
		"p_v1.9.0":    "rejected | check | process | truncated ELF file",
		"p_v1.8.0":    "rejected | discover | process | name is not <name>_v<semver>.so: a name without .so is an out-of-process plugin, which must be executable (chmod +x)",
		"p_v1.7.0":    `rejected | probe | process | version differs from file name: Version() returned "1.0.0", the file name says 1.7.0`,
		"p_v1.6.0":    "rejected | check | process | not an ELF file: the file does not start with the ELF magic",
		"p_v1.5.0":    "rejected | check | process | not a Go executable: a Go",
		"p_v1.4.0":    "rejected | probe | process | plugin process handshake failed: incompatible API version with plugin. Plugin version: 2, Client versions: [1]",
		"p_v1.3.0":    "rejected | probe | process | timed out: the plugin process did not complete its handshake in time",
		"p_v1.2.0":    "selected |  | process | ",
		"p_v1.0.0.so": "not tried |  | native | ",
	}
	for file, w := range want {
		assert.True(t, strings.HasPrefix(got[file], w), "%s:\n got %s\nwant %s...", file, got[file], w)
	}
}

// TestProcessOtherDependency: a plugin built against another version of a
// module the runner links is refused as a .so and serves out of process.
func TestProcessOtherDependency(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	install(t, dir, "otherdep", "other_v9.0.0.so")
	so, err := loader.New(loader.Config{Dir: dir}).Check(context.Background())
	require.ErrorIs(t, err, loader.ErrNoAcceptable)
	assert.ErrorIs(t, so.Candidates[0].Err, loader.ErrBuildMismatch)

	dir = t.TempDir()
	install(t, dir, "otherdep.exec", "other_v9.0.0")
	sel, err := loader.New(loader.Config{Dir: dir}).Load(context.Background())
	require.NoError(t, err)
	defer sel.Close()
	c := sel.Selected()[0]
	assert.Equal(t, loader.Process, c.Backend)
	tr := c.Plugin.(contract.Transformer)
	module := []byte("\x00asm\x01\x00\x00\x00")
	out, err := tr.Transform(context.Background(), module, contract.Config{"k": "v"})
	require.NoError(t, err)
	assert.Equal(t, module, out)
	st := c.ProcessStatus()
	require.NotNil(t, st)
	assert.Positive(t, st.PID)
}

// TestProcessRestart: a selected plugin process that dies is started again;
// calls in the meantime fail as unavailable, and after more deaths than
// MaxRestarts the loader gives up on it.
func TestProcessRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	install(t, dir, "faulty.exec", "faulty_v1.0.0")
	gaveUp := make(chan error, 1)
	sel, err := loader.New(loader.Config{Dir: dir, Process: loader.ProcessConfig{MaxRestarts: 2,
		OnGiveUp: func(_ *loader.Candidate, err error) { gaveUp <- err }}}).Load(context.Background())
	require.NoError(t, err)
	defer sel.Close()
	c := sel.Selected()[0]
	tr := c.Plugin.(contract.Transformer)
	module := []byte("\x00asm\x01\x00\x00\x00")
	crash := wasm.AppendCustomSection(append([]byte{}, module...), "soplug.test", []byte("crash"))
	pid := c.ProcessStatus().PID

	for round := 1; round <= 3; round++ {
		_, err = tr.Transform(context.Background(), crash, nil)
		require.Error(t, err, "the call whose process died")
		var u interface{ Unavailable() bool }
		assert.ErrorAs(t, err, &u)
		if round == 3 {
			break
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := tr.Transform(context.Background(), module, nil)
			if err == nil {
				assert.Equal(t, module, out)
				break
			}
			require.True(t, time.Now().Before(deadline), "not serving again: %v", err)
			time.Sleep(50 * time.Millisecond)
		}
		st := c.ProcessStatus()
		assert.Equal(t, round, st.Restarts)
		assert.NotEqual(t, pid, st.PID, "a new process")
		pid = st.PID
	}
	select {
	case err := <-gaveUp:
		assert.Contains(t, err.Error(), "the plugin process died 3 times within 1m0s")
	case <-time.After(30 * time.Second):
		t.Fatal("no give-up after the third death")
	}
}

// TestProcessNotOrphaned: closing the selection ends the plugin process.
func TestProcessNotOrphaned(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	install(t, dir, "faulty.exec", "faulty_v1.0.0")
	sel, err := loader.New(loader.Config{Dir: dir}).Load(context.Background())
	require.NoError(t, err)
	pid := sel.Selected()[0].ProcessStatus().PID
	require.DirExists(t, filepath.Join("/proc", strconv.Itoa(pid)))
	sel.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil || strings.Contains(string(stat), ") Z ") {
			break // gone, or a zombie waiting for its reaper
		}
		require.True(t, time.Now().Before(deadline), "plugin process %d still running", pid)
		time.Sleep(20 * time.Millisecond)
	}
}

// TestProcessChecksum: with a checksum from the trust manifest, go-plugin's
// SecureConfig refuses to start an executable whose SHA-256 differs.
func TestProcessChecksum(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := install(t, dir, "faulty.exec", "faulty_v1.0.0")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	for _, tc := range []struct {
		name string
		sum  []byte
		ok   bool
	}{{"the manifest's", sum[:], true}, {"another", make([]byte, sha256.Size), false}} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := loader.New(loader.Config{Dir: dir, Process: loader.ProcessConfig{
				Checksum: func(string) ([]byte, error) { return tc.sum, nil }}}).Check(context.Background())
			c := sel.Candidates[0]
			if tc.ok {
				require.NoError(t, err)
				assert.Equal(t, loader.Selected, c.Verdict)
				return
			}
			require.ErrorIs(t, err, loader.ErrNoAcceptable)
			assert.Equal(t, loader.StageAdmit, c.Stage)
			assert.Contains(t, c.Reason, "its SHA-256 is not the manifest's: go-plugin refused to start it")
		})
	}
}
