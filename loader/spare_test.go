package loader_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/loader"
)

// verdictSentinels are the errors a probe's verdict is told by.
var verdictSentinels = []error{loader.ErrProbe, loader.ErrOpen, loader.ErrNoAccessor, loader.ErrAccessorType,
	loader.ErrNilPlugin, loader.ErrPanic, loader.ErrCrash, loader.ErrTimeout, loader.ErrNotAcceptable}

// TestSpare: a spare child, started before the plugin it probes is even
// there, gives the verdict a child started for the probe gives, for good
// plugins and bad (a refusal, a panic or os.Exit in init, a missing
// accessor, a SIGBUS in dlopen); the spare is used once.
func TestSpare(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"good-1.0.0", "notacceptable", "initpanic", "initexit", "noaccessor", "wrongtype", "truncated"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := loader.Prober{Timeout: 5 * time.Second, Spare: &loader.Spare{}}
			defer p.Spare.Close()
			require.NoError(t, p.Spare.Fill(p))
			require.True(t, p.Spare.Ready())

			dir := t.TempDir()
			var path string
			if name == "truncated" {
				path = write(t, dir, "p_v1.0.0.so", truncated(t))
			} else {
				path = install(t, dir, name, "p_v1.0.0.so")
			}
			rep, err := p.Probe(context.Background(), path)
			assert.False(t, p.Spare.Ready(), "the spare was taken")
			coldRep, coldErr := loader.Prober{Timeout: 5 * time.Second}.Probe(context.Background(), path)

			assert.Equal(t, coldRep, rep)
			require.Equal(t, coldErr == nil, err == nil, "spare: %v; cold: %v", err, coldErr)
			for _, s := range verdictSentinels {
				assert.Equal(t, errors.Is(coldErr, s), errors.Is(err, s), "%v: spare %v, cold %v", s, err, coldErr)
			}
			var rerr *loader.RejectError
			if err != nil {
				require.ErrorAs(t, err, &rerr)
				assert.Equal(t, loader.StageProbe, rerr.Stage)
				assert.Equal(t, path, rerr.Path)
			}
		})
	}
}

// TestSpareTimeout: a spare child's time runs from when it is given its
// path, not from its start; a plugin that hangs is still cut off at the
// timeout.
func TestSpareTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	p := loader.Prober{Timeout: timeout, Spare: &loader.Spare{}}
	defer p.Spare.Close()
	require.NoError(t, p.Spare.Fill(p))
	time.Sleep(timeout + timeout/4) // longer than the child's own timeout
	_, err := p.Probe(context.Background(), install(t, t.TempDir(), "good-1.0.0", "p_v1.0.0.so"))
	require.NoError(t, err, "the wait before the path counts for nothing")

	require.NoError(t, p.Spare.Fill(p))
	start := time.Now()
	_, err = p.Probe(context.Background(), install(t, t.TempDir(), "accepthang", "p_v1.0.0.so"))
	assert.ErrorIs(t, err, loader.ErrTimeout)
	assert.Less(t, time.Since(start), timeout+5*time.Second, "cut off near the timeout")
}

// TestSpareDiedWhileWaiting: a spare child that died before its probe
// (here the command's first run exits at once) is replaced by a child
// started for the probe.
func TestSpareDiedWhileWaiting(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	require.NoError(t, err)
	marker := filepath.Join(t.TempDir(), "started")
	script := `if [ -e "$0" ]; then exec "$EXE" "$@"; fi; : > "$0"; exit 3`
	p := loader.Prober{Command: []string{"/bin/sh", "-c", script, marker, "__probe"}, Env: []string{"EXE=" + exe}, Spare: &loader.Spare{}}
	defer p.Spare.Close()
	require.NoError(t, p.Spare.Fill(p))
	require.Eventually(t, func() bool { return !p.Spare.Ready() }, 10*time.Second, 10*time.Millisecond, "the spare died")
	rep, err := p.Probe(context.Background(), install(t, t.TempDir(), "good-1.0.0", "p_v1.0.0.so"))
	require.NoError(t, err)
	assert.Equal(t, "1.0.0", rep.Version)
}

// TestSpareClose: Close ends and collects the waiting child, and a Spare
// once closed starts none; a nil Spare holds nothing.
func TestSpareClose(t *testing.T) {
	t.Parallel()
	p := loader.Prober{Spare: &loader.Spare{}}
	require.NoError(t, p.Spare.Fill(p))
	require.True(t, p.Spare.Ready())
	require.NoError(t, p.Spare.Close())
	assert.False(t, p.Spare.Ready())
	require.NoError(t, p.Spare.Fill(p))
	assert.False(t, p.Spare.Ready(), "closed for good")
	_, err := p.Probe(context.Background(), install(t, t.TempDir(), "good-1.0.0", "p_v1.0.0.so"))
	assert.NoError(t, err, "a probe without a spare starts its own child")

	var none *loader.Spare
	assert.NoError(t, none.Fill(p))
	assert.False(t, none.Ready())
	assert.NoError(t, none.Close())
}
