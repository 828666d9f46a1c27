package oplog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/soplug/soplug/contract"
)

// State is what a worker's delivery is doing.
type State string

// The states of a worker's delivery.
const (
	StateStarting   State = "starting"           // opening the oplog and the cursor
	StateIdle       State = "idle"               // every entry so far is acknowledged
	StateDelivering State = "delivering"         // a batch is with the processor
	StatePaused     State = "paused"             // deactivated: the cursor holds, entries accumulate
	StateRetrying   State = "retrying"           // the processor failed the batch; it is tried again after a backoff
	StateParked     State = "parked"             // failed ParkAfter times in a row; waits to be activated
	StateTorn       State = "waiting-for-writer" // the oplog ends inside a record
	StateCorrupt    State = "corrupt"            // a corrupt record or header: nothing after it is delivered; `runner oplog repair` cuts it
	StateBlocked    State = "blocked"            // an oplog or cursor that cannot be read; nothing is delivered
)

// WorkerStatus is one worker's delivery state.
type WorkerStatus struct {
	Worker string `json:"worker"`
	State  State  `json:"state"`
	// First is the index the worker's oplog starts at (1, or the
	// first_index of its first append); zero until its oplog is opened.
	First    uint64    `json:"first_index,omitempty"`
	Acked    uint64    `json:"acked"`
	Failures int       `json:"failures,omitempty"`
	Error    string    `json:"error,omitempty"`
	Since    time.Time `json:"since"`
}

// worker delivers one worker's oplog.
type worker struct {
	d      *Deliverer
	id     string
	wake   chan struct{} // a file event or a resume; buffered, 1
	mu     sync.Mutex
	st     WorkerStatus
	parked bool
}

func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) unpark() {
	w.mu.Lock()
	w.parked = false
	w.mu.Unlock()
	w.poke()
}

func (w *worker) status() WorkerStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.st
	s.Worker = w.id
	return s
}

// set records the worker's state; the time changes only with the state.
func (w *worker) set(s State, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.st.State != s {
		w.st.Since = time.Now().UTC()
		if m := w.d.cfg.Metrics; m != nil {
			m.state(w.d.name, w.id, w.st.State, s)
		}
	}
	w.st.State = s
	w.st.Error = ""
	if err != nil {
		w.st.Error = err.Error()
	}
}

// wait blocks until a poke, a poll period, or stop; false at stop.
func (w *worker) wait(stop context.Context, extra <-chan struct{}) bool {
	t := time.NewTimer(w.d.cfg.Poll)
	defer t.Stop()
	select {
	case <-stop.Done():
		return false
	case <-w.wake:
	case <-extra:
	case <-t.C:
	}
	return true
}

// open waits for the oplog to exist with a complete header, and for a
// readable cursor, and returns the cursor and the offset of the record
// after its acknowledged one. It opens the files holding a delivery slot,
// so that thousands of workers starting at once keep at most Parallel
// files open.
func (w *worker) open(stop context.Context) (Cursor, int64, bool) {
	for {
		if !w.acquire(stop) {
			return Cursor{}, 0, false
		}
		c, off, err := w.openOnce()
		w.release()
		if err == nil {
			return c, off, true
		}
		switch {
		case errors.Is(err, os.ErrNotExist):
			if w.d.forget(w) {
				return Cursor{}, 0, false // its file went away: a new one starts a new worker
			}
			w.set(StateStarting, nil)
		case errors.Is(err, ErrTorn):
			w.set(StateTorn, err)
		default:
			w.noteBlocked(err)
		}
		if !w.wait(stop, nil) {
			return Cursor{}, 0, false
		}
	}
}

// openOnce checks the oplog's header and reads the cursor, and returns
// the cursor and where delivery resumes: the cursor's offset, or the
// first record's.
func (w *worker) openOnce() (Cursor, int64, error) {
	r, err := OpenReader(w.d.cfg.Dir, w.id)
	if err != nil {
		return Cursor{}, 0, err
	}
	defer r.Close()
	c, err := w.d.cursors.load(w.id)
	if err == nil && c.Offset == 0 && c.Acked > 0 {
		err = fmt.Errorf("%w: the cursor of %s acknowledges index %d but names no offset", ErrCorrupt, w.id, c.Acked)
	}
	if err != nil {
		return Cursor{}, 0, err
	}
	w.mu.Lock()
	w.st.First = r.First()
	w.mu.Unlock()
	if c.Offset > 0 {
		return c, c.Offset, nil
	}
	// A new cursor: nothing before the oplog's first entry is owed.
	c.Acked = r.First() - 1
	return c, r.Offset(), nil
}

// noteBlocked records and logs (once per error) a corrupt oplog or cursor.
func (w *worker) noteBlocked(err error) {
	if w.status().Error != err.Error() {
		w.d.log.Error("oplog delivery blocked", "worker", w.id, "err", err)
	}
	if errors.Is(err, ErrCorrupt) {
		w.set(StateCorrupt, err)
		return
	}
	w.set(StateBlocked, err)
}

// run delivers the worker's oplog until stop.
func (w *worker) run(stop, procCtx context.Context) {
	cur, ackedOff, ok := w.open(stop) // the file is open only while a batch is read: see read
	if !ok {
		return
	}
	d := w.d
	acked, inflight := cur.Acked, cur.InFlight
	redeliverTo := cur.InFlight // entries up to it may have been delivered before
	written := cur              // what the cursor file holds
	commit := func(inFl uint64) error {
		c := Cursor{Worker: w.id, Acked: acked, Offset: ackedOff, InFlight: inFl}
		if c == written {
			return nil
		}
		start := time.Now()
		if err := d.cursors.save(c); err != nil {
			return err
		}
		if m := d.cfg.Metrics; m != nil {
			m.commit(d.name, time.Since(start))
		}
		written, inflight = c, inFl
		return nil
	}
	w.mu.Lock()
	w.st.Acked = acked
	w.mu.Unlock()
	// Each cursor write marks as in flight up to window entries past the
	// acknowledged ones: the next batch, or CommitEvery entries' worth.
	window := uint64(max(d.cfg.BatchSize, d.cfg.CommitEvery))
	pending := false // a batch went to the processor and was not acknowledged
	defer func() {
		mark := acked // nothing is with the processor: a clean stop flags nothing
		if pending {
			mark = inflight
		}
		if err := commit(mark); err != nil {
			d.log.Error("recording the cursor at stop", "worker", w.id, "err", err)
		}
	}()
	for stop.Err() == nil {
		if paused, changed := d.cfg.Paused.Paused(w.id); paused {
			w.set(StatePaused, nil)
			_ = commit(acked)
			w.wait(stop, changed)
			continue
		}
		if !w.acquire(stop) {
			return
		}
		limit := d.cfg.BatchSize
		if redeliverTo > acked {
			limit = int(min(uint64(limit), redeliverTo-acked))
		}
		entries, readOff, rerr := w.read(ackedOff, acked+1, limit)
		if len(entries) == 0 {
			w.release()
			switch {
			case errors.Is(rerr, os.ErrNotExist):
				w.set(StateStarting, nil)
			case errors.Is(rerr, ErrTorn):
				w.set(StateTorn, rerr)
			case rerr != nil:
				w.noteBlocked(rerr)
			default:
				w.set(StateIdle, nil)
			}
			if err := commit(acked); err != nil {
				d.log.Error("recording the cursor", "worker", w.id, "err", err)
			}
			w.wait(stop, nil)
			continue
		}
		last := entries[len(entries)-1].Index
		if last > inflight {
			if err := commit(max(last, acked+window)); err != nil {
				w.release()
				w.set(StateRetrying, err)
				d.log.Error("recording the in-flight mark; the batch waits", "worker", w.id, "err", err)
				w.sleep(stop, d.cfg.MinBackoff)
				continue
			}
		}
		b := contract.Batch{WorkerID: w.id, FirstIndex: entries[0].Index, Entries: entries, Redelivery: entries[0].Index <= redeliverTo}
		if err := w.process(stop, procCtx, b); err != nil {
			pending = true // stopped with the batch unacknowledged: it stays in flight
			return
		}
		acked, ackedOff = last, readOff
		w.mu.Lock()
		w.st.Acked = acked
		w.mu.Unlock()
		if m := d.cfg.Metrics; m != nil {
			m.delivered(d.name, d.version, len(entries), b.Redelivery)
		}
		if acked+uint64(d.cfg.BatchSize) > inflight {
			// Record the acknowledgement, and a mark that covers the next
			// batch, so that it needs no write of its own.
			if err := commit(acked + window); err != nil {
				d.log.Error("recording the cursor", "worker", w.id, "err", err)
			}
		}
	}
}

// read returns up to limit entries from offset off, where the entry of
// index next starts, and the offset after them. The oplog is opened for
// this read only, while the worker holds a delivery slot: a delivery keeps
// at most Parallel files open, however many workers there are.
func (w *worker) read(off int64, next uint64, limit int) ([]contract.Entry, int64, error) {
	r, err := OpenReader(w.d.cfg.Dir, w.id)
	if err != nil {
		return nil, off, err
	}
	defer r.Close()
	r.limit = w.d.cfg.Watermarks.limiter(w.id)
	r.Resume(off, next)
	entries, err := r.Read(limit, w.d.cfg.MaxBatchBytes)
	return entries, r.Offset(), err
}

// process hands b to the processor until it succeeds: a failure is retried
// after a backoff that doubles up to MaxBackoff, and after ParkAfter
// failures in a row the worker is parked until activated. It is called
// holding a delivery slot, keeps it while the processor runs, not while it
// waits, and gives it back before it returns. The error is errStopped when
// stop ended first.
func (w *worker) process(stop, procCtx context.Context, b contract.Batch) error {
	d := w.d
	backoff := d.cfg.MinBackoff
	failures := 0
	for {
		w.set(StateDelivering, nil)
		err := safeProcess(procCtx, d.proc, b)
		if err == nil {
			w.release()
			w.mu.Lock()
			w.st.Failures = 0
			w.mu.Unlock()
			return nil
		}
		if mayHaveRun(err) {
			// The processor died or panicked inside the call: it may have
			// applied part of the batch, so every later try says so.
			b.Redelivery = true
		}
		failures++
		w.mu.Lock()
		w.st.Failures = failures
		w.mu.Unlock()
		if m := d.cfg.Metrics; m != nil {
			m.failed(d.name, d.version)
		}
		w.release()
		if procCtx.Err() != nil || stop.Err() != nil {
			return errStopped
		}
		if failures >= d.cfg.ParkAfter {
			w.mu.Lock()
			w.parked = true
			w.mu.Unlock()
			w.set(StateParked, err)
			d.log.Error("worker parked: the processor failed its batch too many times; `runner oplog activate` tries again",
				"worker", w.id, "first", b.FirstIndex, "entries", len(b.Entries), "failures", failures, "err", err)
			for w.isParked() {
				if !w.wait(stop, nil) {
					return errStopped
				}
			}
			failures, backoff = 0, d.cfg.MinBackoff
		} else {
			w.set(StateRetrying, err)
			d.log.Warn("the processor failed a batch; retrying", "worker", w.id, "first", b.FirstIndex,
				"failures", failures, "backoff", backoff, "err", err)
			if !w.sleep(stop, backoff) {
				return errStopped
			}
			backoff = min(2*backoff, d.cfg.MaxBackoff)
		}
		if !w.acquire(stop) {
			return errStopped
		}
	}
}

func (w *worker) isParked() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.parked
}

// safeProcess calls Process, turning a panic into an error.
func safeProcess(ctx context.Context, p contract.OplogProcessor, b contract.Batch) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panicError{v}
		}
	}()
	return p.Process(ctx, b)
}

// panicError is a Process call that panicked, part-way through the batch.
type panicError struct{ v any }

func (e panicError) Error() string    { return fmt.Sprintf("the processor panicked: %v", e.v) }
func (e panicError) MayHaveRun() bool { return true }

// mayHaveRun reports whether a failed Process call may have applied part
// of its batch: it panicked, or the processor's process died during the
// call (errors with a MayHaveRun method that reports true). A processor
// that returns an error itself has refused the batch.
func mayHaveRun(err error) bool {
	var m interface{ MayHaveRun() bool }
	return errors.As(err, &m) && m.MayHaveRun()
}

func (w *worker) acquire(stop context.Context) bool {
	select {
	case w.d.sem <- struct{}{}:
		return true
	case <-stop.Done():
		return false
	}
}

func (w *worker) release() { <-w.d.sem }

// sleep waits for d or stop; false at stop.
func (w *worker) sleep(stop context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop.Done():
		return false
	}
}
