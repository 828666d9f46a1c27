package oplog

// Buffers an append's decoding takes again from the one before: its read
// window, payload chunks and entries slice, returned once the journal has
// the append (Journal.Append keeps nothing of its entries).

import (
	"math/bits"
	"sync"
)

// classPool keeps things of sizes that are a power of two from min to
// max between uses, a sync.Pool for each; any other size is neither taken
// nor kept. What it keeps goes at the garbage collector's pace.
type classPool struct {
	minShift int
	pools    []sync.Pool
}

func newClassPool(min, max int) *classPool {
	lo, hi := bits.Len(uint(min))-1, bits.Len(uint(max))-1
	return &classPool{minShift: lo, pools: make([]sync.Pool, hi-lo+1)}
}

// class is the pool of size n, or nil.
func (p *classPool) class(n int) *sync.Pool {
	if n <= 0 || n&(n-1) != 0 {
		return nil
	}
	i := bits.Len(uint(n)) - 1 - p.minShift
	if i < 0 || i >= len(p.pools) {
		return nil
	}
	return &p.pools[i]
}

// getSlice returns a slice of length and capacity n from p: a kept one
// when n is one of its sizes (holding what its last user left), else a
// new one.
func getSlice[T any](p *classPool, n int) []T {
	if c := p.class(n); c != nil {
		if s, ok := c.Get().(*[]T); ok {
			return (*s)[:n]
		}
	}
	return make([]T, n)
}

// putSlice keeps s in p for a later getSlice of its capacity.
func putSlice[T any](p *classPool, s []T) {
	if c := p.class(cap(s)); c != nil {
		s = s[:cap(s)]
		c.Put(&s)
	}
}

var (
	chunkPool = newClassPool(minChunk, arenaChunk)         // payload chunks and read windows
	entryPool = newClassPool(minEntries, MaxAppendEntries) // entries slices, by capacity
)

// minEntries is the capacity of an entries slice at its first growth.
const minEntries = 16

// windowSize is the read buffer for a body of size bytes (-1: unknown): a
// power of two from minWindow to decodeWindow, so that it can be kept.
func windowSize(size int64) int {
	switch {
	case size < 0 || size >= decodeWindow:
		return decodeWindow
	case size <= minWindow:
		return minWindow
	}
	return 1 << bits.Len64(uint64(size-1))
}
