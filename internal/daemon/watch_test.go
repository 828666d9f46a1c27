package daemon

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWatchDebounce: a file renamed into place ends the burst after the
// short atomic debounce; one being written waits the whole debounce (here
// 1 s, a hundred times the atomic one), and so does one created empty. A
// README written changes nothing.
// OnBurst's function runs once at the start of each burst, and Events
// counts the relevant events only.
func TestWatchDebounce(t *testing.T) {
	dir := t.TempDir()
	const quiet = time.Second
	w, err := NewWatcher(dir, quiet)
	require.NoError(t, err)
	defer w.Close()
	var bursts atomic.Int32
	w.OnBurst(func() { bursts.Add(1) })
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
	assert.Equal(t, int32(1), bursts.Load(), "the temporary file's events are no burst")
	assert.Equal(t, uint64(1), w.Events(), "one rename")

	why, written := wait(func() {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "README.md"), []byte("notes"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "p_v1.1.0.so"), []byte("plugin"), 0o644))
	})
	assert.Equal(t, "added p_v1.1.0.so", why, "the README is no change")
	assert.Equal(t, int32(2), bursts.Load(), "one burst for the write, however many events")
	assert.Greater(t, w.Events(), uint64(2), "the creation and the writes")
	assert.GreaterOrEqual(t, written, quiet, "a written file waits the whole debounce")

	// A copy that stalls after creating its file, longer than the atomic
	// debounce, before its first write: the empty file is a copy begun.
	why, stalled := wait(func() {
		f, err := os.Create(filepath.Join(dir, "p_v1.2.0.so"))
		require.NoError(t, err)
		time.Sleep(5 * DefaultAtomicDebounce)
		_, err = f.WriteString("plugin")
		require.NoError(t, err)
		require.NoError(t, f.Close())
	})
	assert.Equal(t, "added p_v1.2.0.so", why)
	assert.GreaterOrEqual(t, stalled, quiet, "a file created empty waits the whole debounce")
	assert.Less(t, atomic, quiet/2, "a rename ends the burst sooner (%s, against %s)", atomic, written)
}
