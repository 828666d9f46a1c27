package dirlock_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/dirlock"
)

// TestHelperProcess holds the lock of $DIRLOCK_DIR until its stdin closes.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("DIRLOCK_DIR")
	if dir == "" {
		t.Skip("a helper process")
	}
	l, err := dirlock.Acquire(dir)
	if err != nil {
		os.Stdout.WriteString("error " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString("locked\n")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	_ = l.Release()
	os.Exit(0)
}

// holder starts a process that holds dir's lock; kill ends it.
func holder(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "DIRLOCK_DIR="+dir)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked\n", line)
	return cmd
}

func TestSecondProcessIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	h := holder(t, dir)
	before, err := os.ReadFile(filepath.Join(dir, dirlock.Name))
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(h.Process.Pid)+"\n", string(before))

	_, err = dirlock.Acquire(dir)
	var held *dirlock.HeldError
	require.ErrorAs(t, err, &held)
	assert.True(t, errors.Is(err, dirlock.ErrHeld))
	assert.Equal(t, h.Process.Pid, held.PID)
	assert.Contains(t, err.Error(), dir+" is in use by PID "+strconv.Itoa(h.Process.Pid))
	after, err := os.ReadFile(filepath.Join(dir, dirlock.Name))
	require.NoError(t, err)
	assert.Equal(t, before, after, "the refused process changes nothing")

	// kill -9 of the owner frees the folder.
	require.NoError(t, h.Process.Kill())
	_ = h.Wait()
	l, err := dirlock.Acquire(dir)
	require.NoError(t, err)
	assert.NoError(t, l.Release())
}

func TestReacquireInProcess(t *testing.T) {
	dir := t.TempDir()
	l, err := dirlock.Acquire(dir)
	require.NoError(t, err)
	_, err = dirlock.Acquire(dir)
	assert.ErrorIs(t, err, dirlock.ErrHeld, "a second open file in the same process is refused too")
	require.NoError(t, l.Release())
	l, err = dirlock.Acquire(dir)
	require.NoError(t, err)
	require.NoError(t, l.Release())
	assert.NoError(t, l.Release(), "releasing twice is harmless")
}
