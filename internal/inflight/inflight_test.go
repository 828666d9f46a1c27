package inflight_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/inflight"
)

func TestCharge(t *testing.T) {
	b := inflight.New(100)
	c := b.Charge()
	require.NoError(t, c.Grow(60))
	require.NoError(t, c.Grow(40), "less than held charges nothing")
	assert.Equal(t, int64(60), b.InUse())
	err := c.Grow(101)
	assert.ErrorIs(t, err, inflight.ErrExhausted)
	assert.Equal(t, int64(60), c.Held(), "a refused growth leaves the charge")
	require.NoError(t, c.Grow(100))
	assert.False(t, b.TryAcquire(1))
	c.Release()
	assert.Equal(t, int64(0), b.InUse())
	assert.Equal(t, int64(2), b.Refused())
}

func TestNilAndZeroHoldAnything(t *testing.T) {
	for _, b := range []*inflight.Budget{nil, inflight.New(0)} {
		c := b.Charge()
		require.NoError(t, c.Grow(1<<40))
		c.Release()
		assert.Equal(t, int64(0), b.InUse())
	}
}

func TestReader(t *testing.T) {
	b := inflight.New(3000)
	c := b.Charge()
	out, err := io.ReadAll(inflight.Reader(bytes.NewReader(make([]byte, 1000)), c, 3))
	require.NoError(t, err)
	assert.Len(t, out, 1000)
	assert.Equal(t, int64(3000), c.Held())
	c.Release()

	c = b.Charge()
	_, err = io.ReadAll(inflight.Reader(bytes.NewReader(make([]byte, 1001)), c, 3))
	assert.True(t, errors.Is(err, inflight.ErrExhausted), "%v", err)
	c.Release()
	assert.Equal(t, int64(0), b.InUse())
}

// TestConcurrent: many charges at once never pass the limit together, and
// all of it comes back.
func TestConcurrent(t *testing.T) {
	const limit = 1000
	b := inflight.New(limit)
	var wg sync.WaitGroup
	var mu sync.Mutex
	peak := int64(0)
	for range 50 {
		wg.Go(func() {
			for range 200 {
				if b.TryAcquire(70) {
					mu.Lock()
					peak = max(peak, b.InUse())
					mu.Unlock()
					b.Release(70)
				}
			}
		})
	}
	wg.Wait()
	assert.LessOrEqual(t, peak, int64(limit))
	assert.Equal(t, int64(0), b.InUse())
}

func TestDefaultLimit(t *testing.T) {
	for _, tc := range []struct{ mem, maxBody, want int64 }{
		{24 << 30, 64 << 20, 2 << 30},
		{4 << 30, 64 << 20, 512 << 20},
		{1 << 30, 64 << 20, 256 << 20},
		{1 << 30, 512 << 20, 512 << 20},
		{0, 64 << 20, 256 << 20},
	} {
		assert.Equal(t, tc.want, inflight.DefaultLimit(tc.mem, tc.maxBody), "%d %d", tc.mem, tc.maxBody)
	}
	assert.Greater(t, inflight.MemTotal(), int64(0), "this machine's memory is known")
}

// TestSetMemoryLimit: the Go limit is the budget plus at most the
// headroom (less what the process holds outside the heap), at least half
// of it; an operator's GOMEMLIMIT, or no budget, leaves it alone.
func TestSetMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })

	b := inflight.New(256 << 20)
	t.Setenv("GOMEMLIMIT", "")
	os.Unsetenv("GOMEMLIMIT")
	got := inflight.SetMemoryLimit(b)
	assert.Equal(t, got, debug.SetMemoryLimit(-1), "the limit returned is the one set")
	assert.GreaterOrEqual(t, got, b.Limit()+inflight.MemoryHeadroom/2)
	assert.LessOrEqual(t, got, b.Limit()+inflight.MemoryHeadroom)

	debug.SetMemoryLimit(before)
	assert.Zero(t, inflight.SetMemoryLimit(inflight.New(0)), "no budget")
	assert.Zero(t, inflight.SetMemoryLimit(nil), "no budget")
	t.Setenv("GOMEMLIMIT", "1GiB")
	assert.Zero(t, inflight.SetMemoryLimit(b), "the operator's limit stands")
	assert.Equal(t, before, debug.SetMemoryLimit(-1))
}
