package oplog

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestWindowSize: a body's read window is a size the pool keeps, at least
// the body (up to decodeWindow), never more than decodeWindow.
func TestWindowSize(t *testing.T) {
	for _, tc := range []struct {
		size int64
		want int
	}{
		{-1, decodeWindow}, {0, minWindow}, {1, minWindow}, {minWindow, minWindow},
		{minWindow + 1, 2 * minWindow}, {42 << 10, 64 << 10}, {decodeWindow - 1, decodeWindow},
		{decodeWindow, decodeWindow}, {1 << 40, decodeWindow},
	} {
		got := windowSize(tc.size)
		assert.Equal(t, tc.want, got, "size %d", tc.size)
		assert.NotNil(t, chunkPool.class(got), "size %d: window %d is kept", tc.size, got)
	}
}

// TestClassPool: only powers of two within the pool's range are kept, and
// a kept slice comes back at the length asked for.
func TestClassPool(t *testing.T) {
	p := newClassPool(16, 1024)
	for _, n := range []int{0, -1, 8, 15, 17, 100, 2048} {
		assert.Nil(t, p.class(n), "size %d", n)
	}
	for _, n := range []int{16, 32, 1024} {
		assert.NotNil(t, p.class(n), "size %d", n)
	}
	s := getSlice[byte](p, 64)
	assert.Len(t, s, 64)
	assert.Equal(t, 64, cap(s))
	putSlice(p, s[:3]) // kept at its capacity
	again := getSlice[byte](p, 64)
	assert.Len(t, again, 64)
	odd := getSlice[byte](p, 100) // not a size it keeps: made
	assert.Len(t, odd, 100)
	putSlice(p, odd) // and not kept
}
