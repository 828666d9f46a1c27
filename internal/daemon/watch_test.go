package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWatchDebounce: a file renamed into place ends the burst after the
// short atomic debounce; one being written waits the whole debounce (here
// 1 s, forty times the atomic one). A README written changes nothing.
func TestWatchDebounce(t *testing.T) {
	dir := t.TempDir()
	const quiet = time.Second
	w, err := NewWatcher(dir, quiet)
	require.NoError(t, err)
	defer w.Close()
	fp, err := TakeFingerprint(dir)
	require.NoError(t, err)
	wait := func(act func()) (string, time.Duration) {
		done := make(chan string, 1)
		go func() {
			why, _ := w.Wait(context.Background(), fp)
			done <- why
		}()
		time.Sleep(50 * time.Millisecond) // Wait is reading events
		start := time.Now()
		act()
		why := <-done
		took := time.Since(start)
		fp, err = TakeFingerprint(dir)
		require.NoError(t, err)
		return why, took
	}

	tmp := filepath.Join(dir, ".p_v1.0.0.so.tmp")
	require.NoError(t, os.WriteFile(tmp, []byte("plugin"), 0o644))
	why, atomic := wait(func() { require.NoError(t, os.Rename(tmp, filepath.Join(dir, "p_v1.0.0.so"))) })
	assert.Equal(t, "added p_v1.0.0.so", why)

	why, written := wait(func() {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "README.md"), []byte("notes"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "p_v1.1.0.so"), []byte("plugin"), 0o644))
	})
	assert.Equal(t, "added p_v1.1.0.so", why, "the README is no change")
	assert.GreaterOrEqual(t, written, quiet, "a written file waits the whole debounce")
	assert.Less(t, atomic, quiet/2, "a rename ends the burst sooner (%s, against %s)", atomic, written)
}
