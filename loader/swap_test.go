package loader

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/fixtures"
)

// The probe child is this test binary: loader_test's TestMain dispatches it.

func copyFixture(t *testing.T, name, dst string) {
	t.Helper()
	data, err := os.ReadFile(fixtures.Path(t, name))
	require.NoError(t, err)
	tmp := dst + ".swap"
	require.NoError(t, os.WriteFile(tmp, data, 0o755))
	require.NoError(t, os.Rename(tmp, dst))
}

// TestSwapBeforeLoadIsRefused: a file renamed over the winner after its
// checks (here from BeforeLoad) is not opened; the next start checks it.
func TestSwapBeforeLoadIsRefused(t *testing.T) {
	dir := t.TempDir()
	copyFixture(t, "good-1.0.0", filepath.Join(dir, "p_v1.0.0.so"))
	winner := filepath.Join(dir, "p_v1.0.0.so")
	l := New(Config{Dir: dir, BeforeLoad: func(*Candidate) error {
		copyFixture(t, "initpanic", winner) // passed nothing, would panic in init
		return nil
	}})
	sel, err := l.Load(context.Background())
	require.ErrorIs(t, err, ErrNoAcceptable)
	c := sel.Candidates[0]
	assert.Equal(t, StageLoad, c.Stage)
	assert.ErrorIs(t, c.Err, ErrChanged)
	assert.Nil(t, c.Plugin)
}

// TestSwapDuringOpenIsCaught: a swap in the last window, between the final
// identity check and dlopen, is caught after the open: the selection stops
// with ErrSwapped, and the daemon must not serve.
func TestSwapDuringOpenIsCaught(t *testing.T) {
	dir := t.TempDir()
	winner := filepath.Join(dir, "p_v1.1.0.so")
	copyFixture(t, "good-1.1.0", winner)
	copyFixture(t, "good-1.2.0", filepath.Join(dir, "q_v1.2.0.so"))
	testHookBeforeOpen = func(path string) {
		if path == winner {
			copyFixture(t, "good-2.0.0", winner) // a good plugin, but not the one checked
		}
	}
	t.Cleanup(func() { testHookBeforeOpen = nil })
	sel, err := New(Config{Dir: dir}).Load(context.Background())
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrSwapped), "%v", err)
	assert.Contains(t, err.Error(), "mapped from inode")
	assert.Equal(t, Rejected, sel.Candidates[0].Verdict)
	assert.Equal(t, NotTried, sel.Candidates[1].Verdict, "the selection stopped")
}
