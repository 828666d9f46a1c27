package loader

import (
	"errors"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSpareCloseReaps: the waiting child's process is gone after Close,
// not left running or as a zombie.
func TestSpareCloseReaps(t *testing.T) {
	t.Parallel()
	s := &Spare{}
	require.NoError(t, s.Fill(Prober{}))
	pid := s.child.cmd.Process.Pid
	require.NoError(t, syscall.Kill(pid, 0), "running")
	require.NoError(t, s.Close())
	assert.True(t, errors.Is(syscall.Kill(pid, 0), syscall.ESRCH), "reaped")
}
