package oplog

import (
	"context"
	"errors"
	"fmt"
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
	StateRetrying   State = "retrying"           // the processor failed the batch, or the journal or cursors are unavailable; tried again after a backoff
	StateParked     State = "parked"             // failed ParkAfter times in a row; waits to be activated
	StateTorn       State = "waiting-for-writer" // the oplog ends inside a record
	StateCorrupt    State = "corrupt"            // a corrupt record or header: nothing after it is delivered; `runner oplog repair` cuts it
	StateBlocked    State = "blocked"            // an oplog or cursor that cannot be read; nothing is delivered
	StateLeased     State = "leased"             // another runner delivers it (a journal shared by several runners)
)

// states are every State, in the order above: the series of each exist
// from the start (Metrics.start).
var states = []State{StateStarting, StateIdle, StateDelivering, StatePaused, StateRetrying, StateParked,
	StateTorn, StateCorrupt, StateBlocked, StateLeased}

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
	// Owner and LeaseUntil, in state leased, name the runner that
	// delivers the worker and when its lease ends unless renewed.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
}

// worker delivers one worker's oplog. It has a goroutine only while it
// has work: an event (its file changed, a resume) starts one, and it ends
// when the worker is idle, waiting for a writer, corrupt or paused, so
// that an idle worker costs its map entry and this struct, no goroutine
// and no timer. Its delivery position stays here between activations.
type worker struct {
	d      *Deliverer
	id     string
	wake   chan struct{} // a poke while it waits parked; buffered, 1
	mu     sync.Mutex
	st     WorkerStatus
	parked bool

	// Under d.mu: running, a goroutine delivers it; woken, an event came
	// since that goroutine last looked; gone, its oplog went away and the
	// Deliverer forgot it (a new file gets a new worker).
	running, woken, gone bool

	// Owned by the running goroutine.
	pos *position // nil until the cursor is read
}

// position is where a worker's delivery stands.
type position struct {
	acked       uint64   // the last acknowledged index
	next        Position // the entry after it
	inflight    uint64   // the in-flight mark the cursor file holds
	redeliverTo uint64   // entries up to it may have been delivered before a crash (until a read finds the end)
	stored      Cursor   // what the cursor store holds
}

// poke says the worker may have work: it joins the run queue unless it is
// there or running already.
func (w *worker) poke() {
	d := w.d
	d.mu.Lock()
	w.woken = true
	if !w.running && d.stop != nil && !d.stopped && !w.gone {
		w.running = true
		d.queue = append(d.queue, w)
		d.grow()
	}
	d.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// looked says the goroutine is about to look for work: an event from now
// on means look again.
func (w *worker) looked() {
	w.d.mu.Lock()
	w.woken = false
	w.d.mu.Unlock()
}

// rest ends the goroutine when no event came since it looked (true), or
// says to look again (false).
func (w *worker) rest() bool {
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	if w.woken && !w.gone {
		w.woken = false
		return false
	}
	w.running = false
	return true
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
	if s != StateLeased {
		w.st.Owner, w.st.LeaseUntil = "", time.Time{}
	}
	if err != nil {
		w.st.Error = err.Error()
	}
}

// wait blocks until a poke or stop; false at stop. Only a parked worker
// with its batch in hand waits, its goroutine out of the delivery pool.
func (w *worker) wait(stop context.Context) bool {
	w.d.leavePool()
	defer w.d.rejoinPool()
	select {
	case <-stop.Done():
		return false
	case <-w.wake:
	}
	return true
}

// open reads the oplog's header and the cursor, holding a delivery slot
// (thousands of workers starting at once keep at most Parallel files
// open), and returns the position delivery resumes at. When the oplog is
// not ready (gone, torn, corrupt) it records why and returns nil: the
// event that changes the file wakes the worker again.
func (w *worker) open(stop context.Context) *position {
	var unavailable retry
	for {
		if !w.acquire(stop) {
			return nil
		}
		stored, acked, next, err := w.openOnce(stop)
		w.release()
		switch {
		case err == nil:
			if m := w.d.cfg.Metrics; m != nil && w.status().State == StateLeased {
				m.lease(w.d.name, "taken")
			}
			return &position{acked: acked, next: next, inflight: stored.InFlight, redeliverTo: stored.InFlight, stored: stored}
		case errors.Is(err, ErrNoJournal):
			if !w.d.forget(w) { // forget marks it gone
				w.set(StateStarting, nil)
			}
		case errors.Is(err, ErrTorn):
			w.set(StateTorn, err)
		case errors.Is(err, ErrLeased):
			w.leasedTo(err)
		case errors.Is(err, ErrUnavailable):
			if unavailable.wait(stop, w, err) {
				continue
			}
		default:
			w.noteBlocked(err)
		}
		return nil
	}
}

// retry is the backoff of a worker whose journal or cursors are
// unavailable (a cluster electing a leader, a request timed out): no event
// will come for what was already appended, so the worker tries again by
// itself, after MinBackoff doubling up to MaxBackoff.
type retry struct{ backoff time.Duration }

// wait records err, waits out the backoff and reports whether to try
// again (false at stop: a read that failed because of the stop is no news).
func (r *retry) wait(stop context.Context, w *worker, err error) bool {
	if stop.Err() != nil {
		return false
	}
	if r.backoff == 0 {
		r.backoff = w.d.cfg.MinBackoff
		w.d.log.Warn("the oplog journal is unavailable; trying again", "worker", w.id, "err", err)
	}
	w.set(StateRetrying, err)
	ok := w.sleep(stop, r.backoff)
	r.backoff = min(2*r.backoff, w.d.cfg.MaxBackoff)
	return ok
}

// openOnce reads where the journal starts and the cursor, and returns the
// cursor as stored, the acknowledged index and the position delivery
// resumes at: the cursor's, or the journal's head.
func (w *worker) openOnce(ctx context.Context) (Cursor, uint64, Position, error) {
	head, err := w.d.journal.Head(ctx, w.id)
	if err != nil {
		return Cursor{}, 0, Position{}, err
	}
	c, err := w.d.cursors.Get(ctx, w.id)
	if err != nil {
		return Cursor{}, 0, Position{}, err
	}
	w.mu.Lock()
	w.st.First = head.Next
	w.mu.Unlock()
	if c.Offset > 0 {
		return c, c.Acked, Position{Next: c.Acked + 1, At: c.Offset}, nil
	}
	if c.Acked > 0 {
		return Cursor{}, 0, Position{}, fmt.Errorf("%w: the cursor of %s acknowledges index %d but names no position", ErrCorrupt, w.id, c.Acked)
	}
	// A new cursor: nothing before the journal's first entry is owed.
	return c, head.Next - 1, head, nil
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

// run is one activation of the worker's goroutine: it delivers until the
// worker has nothing to do and no event came meanwhile, or until stop.
func (w *worker) run(stop, procCtx context.Context) {
	for {
		w.looked()
		if w.pos == nil {
			w.pos = w.open(stop) // the file is open only while a batch is read: see read
		}
		if w.pos != nil && !w.deliver(stop, procCtx) {
			return // stopped
		}
		if stop.Err() != nil || w.rest() {
			return // rest ends a gone worker too: it is woken no more
		}
	}
}

// deliver hands the worker's entries to the processor from its position
// until there are none, or it is paused, waiting for a writer or corrupt
// (true), or until stop (false). The cursor is written on the way out.
func (w *worker) deliver(stop, procCtx context.Context) bool {
	d, p := w.d, w.pos
	commit := func(inFl uint64) error {
		c := Cursor{Worker: w.id, Acked: p.acked, Offset: p.next.At, InFlight: inFl}
		if c == p.stored {
			return nil
		}
		start := time.Now()
		// Not stop: the cursor is written on the way out, after it.
		if err := d.cursors.Put(context.WithoutCancel(stop), p.stored, c); err != nil {
			return err
		}
		p.stored = c
		if m := d.cfg.Metrics; m != nil {
			m.commit(d.name, time.Since(start))
		}
		p.inflight = inFl
		return nil
	}
	w.mu.Lock()
	w.st.Acked = p.acked
	w.mu.Unlock()
	// Each cursor write marks as in flight up to window entries past the
	// acknowledged ones: the next batch, or CommitEvery entries' worth.
	window := uint64(max(d.cfg.BatchSize, d.cfg.CommitEvery))
	pending := false // a batch went to the processor and was not acknowledged
	lost := false    // another runner took the worker: nothing more is written
	var unavailable retry
	defer func() {
		if lost {
			return
		}
		mark := p.acked // nothing is with the processor: a clean stop flags nothing
		if pending {
			mark = p.inflight
		}
		if err := commit(mark); errors.Is(err, ErrLeased) {
			w.leasedTo(err)
		} else if err != nil {
			d.log.Error("recording the cursor", "worker", w.id, "err", err)
		}
	}()
	for stop.Err() == nil {
		if d.cfg.Paused.Paused(w.id) {
			w.set(StatePaused, nil) // activate resumes it (Deliverer.Resume)
			return true
		}
		if !w.acquire(stop) {
			return false
		}
		limit := d.cfg.BatchSize
		if p.redeliverTo > p.acked {
			limit = int(min(uint64(limit), p.redeliverTo-p.acked))
		}
		entries, after, rerr := w.read(stop, p.next, limit)
		if len(entries) == 0 {
			w.release()
			if errors.Is(rerr, ErrUnavailable) {
				if !unavailable.wait(stop, w, rerr) {
					return false // stopped
				}
				continue
			}
			switch {
			case errors.Is(rerr, ErrNoJournal):
				if !d.forget(w) { // gone: forgotten (a new file gets a new worker)
					w.set(StateStarting, nil)
				}
			case errors.Is(rerr, ErrTorn):
				w.set(StateTorn, rerr)
			case rerr != nil:
				w.noteBlocked(rerr)
			default:
				// Read to the end: every entry an earlier run can have
				// handed to the processor has been read since the open
				// (and flagged), so what is appended from now on is new
				// and the in-flight mark flags nothing more. Not so on a
				// fleet, where the runner that held the worker may still
				// deliver under its mark (paused past its lease, say):
				// there the mark's entries stay flagged.
				if ex, ok := d.cursors.(interface{ Exclusive() bool }); ok && ex.Exclusive() {
					p.redeliverTo = min(p.redeliverTo, p.acked)
				}
				w.set(StateIdle, nil)
			}
			return true
		}
		unavailable = retry{} // a new outage starts from MinBackoff, and is logged
		last := entries[len(entries)-1].Index
		if last > p.inflight {
			if err := commit(max(last, p.acked+window)); err != nil {
				w.release()
				if errors.Is(err, ErrLeased) { // the batch goes to nobody here
					lost = true
					w.leasedTo(err)
					return true
				}
				w.set(StateRetrying, err)
				d.log.Error("recording the in-flight mark; the batch waits", "worker", w.id, "err", err)
				w.sleep(stop, d.cfg.MinBackoff)
				continue
			}
		}
		b := contract.Batch{WorkerID: w.id, FirstIndex: entries[0].Index, Entries: entries, Redelivery: entries[0].Index <= p.redeliverTo}
		if err := w.process(stop, procCtx, b); err != nil {
			pending = true // stopped with the batch unacknowledged: it stays in flight
			return false
		}
		p.acked, p.next = last, after
		w.mu.Lock()
		w.st.Acked = p.acked
		w.mu.Unlock()
		if m := d.cfg.Metrics; m != nil {
			m.delivered(d.name, d.version, len(entries), b.Redelivery)
		}
		if p.acked+uint64(d.cfg.BatchSize) > p.inflight {
			// Record the acknowledgement, and a mark that covers the next
			// batch, so that it needs no write of its own.
			if err := commit(p.acked + window); errors.Is(err, ErrLeased) {
				// Taken while the batch was with the processor: the
				// acknowledgement is not recorded, and the new owner
				// delivers the batch again, flagged.
				lost = true
				w.leasedTo(err)
				return true
			} else if err != nil {
				d.log.Error("recording the cursor", "worker", w.id, "err", err)
			}
		}
	}
	return false
}

// read returns up to limit entries from at and the position after them.
// It is called holding a delivery slot: a FileJournal opens the oplog for
// the read only, so that a delivery keeps at most Parallel files open,
// however many workers there are.
func (w *worker) read(ctx context.Context, at Position, limit int) ([]contract.Entry, Position, error) {
	return w.d.journal.Read(ctx, w.id, at, limit, w.d.cfg.MaxBatchBytes)
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
		d.calling(w, true)
		err := safeProcess(procCtx, d.proc, b)
		d.calling(w, false)
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
				if !w.wait(stop) {
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
// While it sleeps, its goroutine is out of the delivery pool.
func (w *worker) sleep(stop context.Context, d time.Duration) bool {
	w.d.leavePool()
	defer w.d.rejoinPool()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop.Done():
		return false
	}
}
