package oplog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/quarantine"
)

// Defaults for the zero Config, chosen from the measurements in
// BENCHMARKS.md.
const (
	// DefaultBatchSize is the most entries one Process call gets.
	DefaultBatchSize = 5000
	// DefaultMaxBatchBytes bounds a batch's size in bytes (at least one
	// entry is always delivered, however large).
	DefaultMaxBatchBytes = 4 << 20
	// DefaultPoll is how often the oplog folder is listed for an oplog
	// that no file event announced.
	DefaultPoll = 30 * time.Second
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait before a
	// failed batch is tried again; it doubles from the first to the second.
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	// DefaultParkAfter is how many failures in a row park a worker.
	DefaultParkAfter = 10
)

// Config configures a Deliverer. The zero value delivers the oplogs of
// ./oplog, keeps cursors in ./oplog/.cursors/<processor name>, and uses
// the defaults above.
type Config struct {
	// Journal holds the workers' oplogs. Nil means a FileJournal on Dir,
	// listed every Poll.
	Journal Journal
	// Dir is the oplog folder of the FileJournal made when Journal is nil.
	Dir string
	// CursorDir, when set, keeps this processor's cursors in that folder
	// (FileCursors). Empty means the Journal's cursors of the processor
	// (for a FileJournal, <its CursorDir>/<processor name>).
	CursorDir string
	// BatchSize is the most entries a Process call gets. Zero means
	// DefaultBatchSize.
	BatchSize int
	// MaxBatchBytes bounds a batch's bytes. Zero means
	// DefaultMaxBatchBytes.
	MaxBatchBytes int
	// CommitEvery lets several batches share one cursor write. A cursor
	// write records the acknowledged index and an in-flight mark past it:
	// one batch's worth (BatchSize) by default, so that the next batch
	// needs no write of its own, or CommitEvery entries when that is more,
	// so that the cursor is written once per CommitEvery entries. After a
	// crash, the entries between a worker's acknowledged index and its
	// mark that exist then are delivered in one batch with
	// Batch.Redelivery set: the batch that was with the processor, or
	// entries that had not yet been delivered. With cursors no other
	// process writes (FileCursors.Exclusive), entries appended after
	// delivery has read to the end are not flagged. Zero means BatchSize.
	CommitEvery int
	// Parallel is how many workers' batches are read and processed at
	// once. Zero means GOMAXPROCS.
	Parallel int
	// Poll is the Poll of the FileJournal made when Journal is nil. Workers
	// are woken by the journal's notices alone (an append, an activate):
	// an idle worker costs no goroutine, timer or read.
	Poll time.Duration
	// MinBackoff and MaxBackoff bound the wait before a failed batch is
	// tried again. Zero means the defaults.
	MinBackoff, MaxBackoff time.Duration
	// ParkAfter is how many failures in a row park a worker until it is
	// activated again. Zero means DefaultParkAfter.
	ParkAfter int
	// HangAfter is how long a Process call may run before Stuck reports it:
	// a Go function cannot be stopped, and the daemon then stops feeding
	// systemd's watchdog, which aborts the runner with every goroutine's
	// stack, the stuck call's naming the processor, which the next start
	// blames. Zero means DefaultHangAfter; negative, never.
	HangAfter time.Duration
	// Mark counts the processor's Process calls while they run; nil counts
	// nothing.
	Mark *quarantine.Mark
	// Paused are the workers whose delivery is paused. Nil means none, in
	// memory.
	Paused *PauseSet
	// Metrics receives counts; nil means none.
	Metrics *Metrics
	// Logger receives the delivery log. Nil means none.
	Logger *slog.Logger
}

func (c *Config) defaults(name string) {
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.Parallel <= 0 {
		c.Parallel = runtime.GOMAXPROCS(0)
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.ParkAfter <= 0 {
		c.ParkAfter = DefaultParkAfter
	}
	if c.HangAfter == 0 {
		c.HangAfter = DefaultHangAfter
	}
	if c.Paused == nil {
		c.Paused, _ = OpenPauseSet("")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Journal == nil {
		c.Journal = NewFileJournal(FileJournalConfig{Dir: c.Dir, Poll: c.Poll, Parallel: c.Parallel, Logger: c.Logger})
	}
}

// Deliverer hands every worker's oplog to one OplogProcessor: each worker
// in index order, from its cursor, up to Config.Parallel workers at once.
type Deliverer struct {
	cfg     Config
	name    string
	version string
	proc    contract.OplogProcessor
	journal Journal
	cursors CursorStore
	sem     chan struct{}
	log     *slog.Logger

	mu      sync.Mutex
	workers map[string]*worker
	// Set by Run: what the workers' goroutines run under, and wait for;
	// stopped once Run waits for them, when no goroutine may start.
	stop, procCtx context.Context
	wg            *sync.WaitGroup
	stopped       bool
	// The run queue: workers poked while not running, and how many pool
	// goroutines deliver them (at most Parallel × poolPerSlot, beside the
	// goroutines of workers that wait out a backoff or a park).
	queue  []*worker
	active int
	// leased are the workers other runners hold, with their leases' ends;
	// checkLeases watches them, from the first on.
	leased   map[*worker]time.Time
	checking bool

	callMu sync.Mutex
	calls  map[*worker]time.Time // Process calls running, by their start
}

// poolPerSlot is how many pool goroutines there are per delivery slot
// (Parallel): more goroutines than slots, so that a worker's cursor write
// (an fsync, outside its slot) overlaps the others' reads and Process
// calls; the slots alone bound those.
const poolPerSlot = 64

// grow starts a pool goroutine when there are queued workers and fewer
// than the pool's size; with d.mu held.
func (d *Deliverer) grow() {
	if len(d.queue) > 0 && d.active < d.cfg.Parallel*poolPerSlot && !d.stopped {
		d.active++
		d.wg.Go(d.drain)
	}
}

// drain is a pool goroutine: it runs queued workers until there are none,
// or the pool is over its size.
func (d *Deliverer) drain() {
	for {
		d.mu.Lock()
		if len(d.queue) == 0 || d.active > d.cfg.Parallel*poolPerSlot || d.stopped {
			d.active--
			d.mu.Unlock()
			return
		}
		w := d.queue[0]
		d.queue[0] = nil
		d.queue = d.queue[1:]
		if len(d.queue) == 0 {
			d.queue = nil // let a long queue's array go
		}
		d.mu.Unlock()
		w.run(d.stop, d.procCtx)
	}
}

// leavePool takes the calling goroutine out of the pool while its worker
// waits (a backoff, a park), so that the others go on.
func (d *Deliverer) leavePool() {
	d.mu.Lock()
	d.active--
	d.grow()
	d.mu.Unlock()
}

// rejoinPool puts it back: the pool may be over its size until a
// goroutine finds it so and ends.
func (d *Deliverer) rejoinPool() {
	d.mu.Lock()
	d.active++
	d.mu.Unlock()
}

// NewDeliverer returns a Deliverer of the oplogs in cfg.Journal to proc,
// the processor named name at version.
func NewDeliverer(cfg Config, name, version string, proc contract.OplogProcessor) (*Deliverer, error) {
	cfg.defaults(name)
	var cs CursorStore
	var err error
	if cfg.CursorDir != "" {
		cs, err = NewFileCursors(cfg.CursorDir, cfg.Parallel)
	} else {
		cs, err = cfg.Journal.Cursors(name)
	}
	if err != nil {
		return nil, err
	}
	d := &Deliverer{cfg: cfg, name: name, version: version, proc: proc, journal: cfg.Journal, cursors: cs,
		sem: make(chan struct{}, cfg.Parallel), workers: map[string]*worker{}, calls: map[*worker]time.Time{},
		log: cfg.Logger.With("processor", name, "version", version)}
	cfg.Paused.onResume(d.Resume)
	if cfg.Metrics != nil {
		cfg.Metrics.start(name, version)
	}
	return d, nil
}

// notice starts the worker of a journal notice, if it has none, and pokes
// it when it is new or may have changed.
func (d *Deliverer) notice(worker string, n Notice) {
	if w, isNew := d.start(worker); w != nil && (isNew || n == Changed) {
		w.poke()
	}
}

// Run delivers until stop ends, then lets every batch in flight finish
// (each Process call gets procCtx, which the caller ends when the batches
// may take no longer), records every cursor, and returns. It returns an
// error only when the journal cannot be watched.
func (d *Deliverer) Run(stop, procCtx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	d.mu.Lock()
	d.stop, d.procCtx, d.wg = stop, procCtx, &wg
	d.mu.Unlock()
	defer func() { // before the Wait
		d.mu.Lock()
		d.stopped = true
		d.mu.Unlock()
	}()
	if err := d.journal.Watch(stop, d.notice); err != nil {
		return fmt.Errorf("oplog: %w", err)
	}
	return nil
}

// start returns the worker of an ID, and whether it is new; nil for an
// ID that is not valid. A new worker's delivery starts at its first poke.
func (d *Deliverer) start(id string) (*worker, bool) {
	if CheckWorkerID(id) != nil {
		return nil, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if w, ok := d.workers[id]; ok {
		return w, false
	}
	w := &worker{d: d, id: id, wake: make(chan struct{}, 1)}
	w.set(StateStarting, nil)
	d.workers[id] = w
	return w, true
}

// forget drops w, a worker whose journal does not exist (removed, or
// created and removed again by a refused append), so that thousands of
// such names leave nothing behind; false when the journal is there after
// all. It looks under d.mu, which start takes too: a journal created
// after the look has a notice that starts a new worker.
func (d *Deliverer) forget(w *worker) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.journal.Head(d.stop, w.id); !errors.Is(err, ErrNoJournal) {
		return false
	}
	if d.workers[w.id] == w {
		delete(d.workers, w.id)
	}
	w.gone = true
	if m := d.cfg.Metrics; m != nil {
		m.forget(d.name, w.status().State)
	}
	return true
}

// Status returns every worker's state, sorted by worker.
func (d *Deliverer) Status() []WorkerStatus {
	d.mu.Lock()
	ws := make([]*worker, 0, len(d.workers))
	for _, w := range d.workers {
		ws = append(ws, w)
	}
	d.mu.Unlock()
	out := make([]WorkerStatus, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.status())
	}
	slices.SortFunc(out, func(a, b WorkerStatus) int { return strings.Compare(a.Worker, b.Worker) })
	return out
}

// Resume wakes worker's delivery after a pause or a park: a parked
// worker's batch is tried again at once.
func (d *Deliverer) Resume(worker string) {
	d.mu.Lock()
	w := d.workers[worker]
	d.mu.Unlock()
	if w != nil {
		w.unpark()
	}
}

// DefaultHangAfter is Config.HangAfter when zero: far above any batch a
// processor should need, so that only a call that will not return trips it.
const DefaultHangAfter = 5 * time.Minute

// Stuck reports the Process call that has run longest, when that is more
// than Config.HangAfter: what it is, and true.
func (d *Deliverer) Stuck() (string, bool) {
	if d.cfg.HangAfter < 0 {
		return "", false
	}
	d.callMu.Lock()
	defer d.callMu.Unlock()
	var oldest *worker
	var since time.Time
	for w, t := range d.calls {
		if oldest == nil || t.Before(since) {
			oldest, since = w, t
		}
	}
	if oldest == nil || time.Since(since) <= d.cfg.HangAfter {
		return "", false
	}
	return fmt.Sprintf("a Process call into %s %s for worker %s has run %v (--oplog-hang-after %v)",
		d.name, d.version, oldest.id, time.Since(since).Round(time.Second), d.cfg.HangAfter), true
}

// calling marks w's Process call running (true) or ended (false), for
// Stuck and in the version's count of calls in flight (Config.Mark).
func (d *Deliverer) calling(w *worker, running bool) {
	d.callMu.Lock()
	defer d.callMu.Unlock()
	if running {
		d.cfg.Mark.Enter()
		d.calls[w] = time.Now()
	} else {
		d.cfg.Mark.Exit()
		delete(d.calls, w)
	}
}

// Name returns the processor's name.
func (d *Deliverer) Name() string { return d.name }

// Version returns the processor's version.
func (d *Deliverer) Version() string { return d.version }

// errStopped ends a worker's loop.
var errStopped = errors.New("oplog: stopped")
