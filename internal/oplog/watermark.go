package oplog

import (
	"sync"
	"sync/atomic"
)

// watermarks are the committed ends of the oplogs a FileJournal writes:
// for each worker whose Writer it holds, the offset up to which
// every record is synced to disk and acknowledged. Delivery never reads
// past a worker's watermark, so the bytes of an append that is still being
// written, or that failed and is being cut off, are never handed to a
// processor. A worker with no watermark is read to the end of its file
// (an oplog written by another process, or by nobody now).
//
// The zero value is not used: newWatermarks. A nil *watermarks has no
// watermark for any worker.
type watermarks struct {
	mu       sync.Mutex
	m        map[string]*atomic.Int64
	advanced map[int]func(worker string) // told of each new watermark (watches)
	nextID   int
}

// onAdvance has fn told of every watermark that moves from now on, until
// the function it returns is called: the wake-up of a delivery that read
// up to the old one.
func (wm *watermarks) onAdvance(fn func(worker string)) (stop func()) {
	wm.mu.Lock()
	defer wm.mu.Unlock()
	id := wm.nextID
	wm.nextID++
	wm.advanced[id] = fn
	return func() {
		wm.mu.Lock()
		delete(wm.advanced, id)
		wm.mu.Unlock()
	}
}

// watermark is one worker's watermark, as its Writer publishes it.
type watermark struct {
	wm     *watermarks
	worker string
	v      *atomic.Int64
}

// Store publishes end and wakes the deliveries: the file event of the
// write that it covers may have come before it.
func (m watermark) Store(end int64) {
	m.v.Store(end)
	m.wm.mu.Lock()
	tell := make([]func(string), 0, len(m.wm.advanced))
	for _, fn := range m.wm.advanced {
		tell = append(tell, fn)
	}
	m.wm.mu.Unlock()
	for _, fn := range tell {
		fn(m.worker)
	}
}

// newWatermarks returns an empty set of watermarks.
func newWatermarks() *watermarks {
	return &watermarks{m: map[string]*atomic.Int64{}, advanced: map[int]func(string){}}
}

// hold returns worker's watermark, set to end.
func (wm *watermarks) hold(worker string, end int64) interface{ Store(int64) } {
	if wm == nil {
		return nil
	}
	wm.mu.Lock()
	defer wm.mu.Unlock()
	m, ok := wm.m[worker]
	if !ok {
		m = new(atomic.Int64)
		wm.m[worker] = m
	}
	m.Store(end)
	return watermark{wm: wm, worker: worker, v: m}
}

// drop forgets worker's watermark: no writer of this process holds its
// oplog, and the file ends where the watermark was.
func (wm *watermarks) drop(worker string) {
	if wm == nil {
		return
	}
	wm.mu.Lock()
	delete(wm.m, worker)
	wm.mu.Unlock()
}

// limiter returns a function that reports worker's watermark, if it has
// one, for a Reader.
func (wm *watermarks) limiter(worker string) func() (int64, bool) {
	if wm == nil {
		return nil
	}
	return func() (int64, bool) {
		wm.mu.Lock()
		m, ok := wm.m[worker]
		wm.mu.Unlock()
		if !ok {
			return 0, false
		}
		return m.Load(), true
	}
}
