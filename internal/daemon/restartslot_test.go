package daemon

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRestartSlots(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "boot_id")
		require.NoError(t, os.WriteFile(p, []byte(s), 0o644))
		return p
	}
	// The perturbation computed independently (Python: the UUID's bytes as
	// two little-endian uint64, XORed, modulo 60e6): 53773553 µs.
	s, err := readRestartSlots(write("6f1c2d4e-8a9b-4c3d-9e2f-0a1b2c3d4e5f\n"))
	require.NoError(t, err)
	assert.Equal(t, 23553*time.Microsecond, s.phase)

	for _, bad := range []string{"", "not-a-boot-id", "6f1c2d4e-8a9b-4c3d-9e2f"} {
		_, err := readRestartSlots(write(bad))
		assert.Error(t, err, "%q", bad)
	}
	_, err = readRestartSlots(filepath.Join(dir, "missing"))
	assert.Error(t, err)

	// next is the first instant of the grid at or after t.
	for _, at := range []time.Duration{0, 1, s.phase - 1, s.phase, s.phase + 1, 7 * time.Hour, 7*time.Hour + s.phase, 123456789 * time.Microsecond} {
		g := s.next(at)
		assert.GreaterOrEqual(t, g, at)
		assert.Less(t, g-at, slotEvery)
		assert.Equal(t, s.phase, g%slotEvery, "at %v", at)
	}

	// drainAt: the exit (drain start + lead) lies restartSec before an
	// instant, and never in the past.
	const restartSec, lead = 10 * time.Millisecond, 40 * time.Millisecond
	for now := time.Hour; now < time.Hour+slotEvery; now += 7 * time.Millisecond {
		wait, slot := s.drainAt(now, restartSec, lead)
		assert.GreaterOrEqual(t, wait, time.Duration(0))
		assert.Less(t, wait, slotEvery)
		assert.Equal(t, slot, wait+lead+restartSec)
		assert.Equal(t, s.phase, (now+slot)%slotEvery)
	}
}

// TestRestartSlotsOfThisMachine reads the real boot ID.
func TestRestartSlotsOfThisMachine(t *testing.T) {
	if _, err := os.Stat("/proc/sys/kernel/random/boot_id"); err != nil {
		t.Skip("no boot ID here")
	}
	s, err := readRestartSlots("/proc/sys/kernel/random/boot_id")
	require.NoError(t, err)
	assert.Less(t, s.phase, slotEvery)
	assert.Positive(t, monotonic())
}

// TestProcessStart: this process started before now, and after the test
// binary's own file was written.
func TestProcessStart(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	fi, err := os.Stat(exe)
	require.NoError(t, err)
	start := ProcessStart()
	assert.False(t, start.After(time.Now().Add(time.Second)), "%v is in the future (its clock ticks are 10 ms)", start)
	assert.False(t, start.Before(fi.ModTime().Add(-time.Second)), "%v is before the binary %s was written (%v)", start, exe, fi.ModTime())
}
