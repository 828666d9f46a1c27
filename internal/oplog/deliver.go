package oplog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/soplug/soplug/contract"
)

// Defaults for the zero Config, chosen from the measurements in
// BENCHMARKS.md.
const (
	// DefaultBatchSize is the most entries one Process call gets.
	DefaultBatchSize = 5000
	// DefaultMaxBatchBytes bounds a batch's size in bytes (at least one
	// entry is always delivered, however large).
	DefaultMaxBatchBytes = 4 << 20
	// DefaultPoll is how often an idle worker's oplog is looked at even
	// without a file event.
	DefaultPoll = time.Second
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait before a
	// failed batch is tried again; it doubles from the first to the second.
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	// DefaultParkAfter is how many failures in a row park a worker.
	DefaultParkAfter = 10
)

// Config configures a Deliverer. The zero value reads ./oplog, keeps
// cursors in ./oplog/.cursors, and uses the defaults above.
type Config struct {
	// Dir is the oplog folder: one <worker>.oplog file per worker.
	Dir string
	// CursorDir keeps this processor's cursors. Empty means
	// <Dir>/.cursors/<processor name>.
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
	// entries that had not yet been delivered. Zero means BatchSize.
	CommitEvery int
	// Parallel is how many workers' batches are read and processed at
	// once. Zero means GOMAXPROCS.
	Parallel int
	// Poll is how often an idle worker's oplog is read without a file
	// event. Zero means DefaultPoll.
	Poll time.Duration
	// MinBackoff and MaxBackoff bound the wait before a failed batch is
	// tried again. Zero means the defaults.
	MinBackoff, MaxBackoff time.Duration
	// ParkAfter is how many failures in a row park a worker until it is
	// activated again. Zero means DefaultParkAfter.
	ParkAfter int
	// Watermarks are the committed ends of the oplogs this process's
	// Appender writes (AppenderConfig.Watermarks): delivery reads no
	// further. Nil means every oplog is read to the end of its file.
	Watermarks *Watermarks
	// Paused are the workers whose delivery is paused. Nil means none, in
	// memory.
	Paused *PauseSet
	// Metrics receives counts; nil means none.
	Metrics *Metrics
	// Logger receives the delivery log. Nil means none.
	Logger *slog.Logger
}

func (c *Config) defaults(name string) {
	if c.Dir == "" {
		c.Dir = "oplog"
	}
	if c.CursorDir == "" {
		c.CursorDir = filepath.Join(c.Dir, ".cursors", name)
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.Parallel <= 0 {
		c.Parallel = runtime.GOMAXPROCS(0)
	}
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
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
	if c.Paused == nil {
		c.Paused, _ = OpenPauseSet("")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Deliverer hands every worker's oplog to one OplogProcessor: each worker
// in index order, from its cursor, up to Config.Parallel workers at once.
type Deliverer struct {
	cfg     Config
	name    string
	version string
	proc    contract.OplogProcessor
	cursors *cursorStore
	sem     chan struct{}
	log     *slog.Logger

	mu      sync.Mutex
	workers map[string]*worker
}

// NewDeliverer returns a Deliverer of the oplogs in cfg.Dir to proc, the
// processor named name at version.
func NewDeliverer(cfg Config, name, version string, proc contract.OplogProcessor) (*Deliverer, error) {
	cfg.defaults(name)
	cs, err := newCursorStore(cfg.CursorDir, cfg.Parallel)
	if err != nil {
		return nil, err
	}
	return &Deliverer{cfg: cfg, name: name, version: version, proc: proc, cursors: cs,
		sem: make(chan struct{}, cfg.Parallel), workers: map[string]*worker{},
		log: cfg.Logger.With("processor", name, "version", version)}, nil
}

// Run delivers until stop ends, then lets every batch in flight finish
// (each Process call gets procCtx, which the caller ends when the batches
// may take no longer), records every cursor, and returns. It returns an
// error only when the oplog folder cannot be watched or read.
func (d *Deliverer) Run(stop, procCtx context.Context) error {
	if err := os.MkdirAll(d.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("oplog: %w", err)
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("oplog: watching %s: %w", d.cfg.Dir, err)
	}
	defer fsw.Close()
	if err := fsw.Add(d.cfg.Dir); err != nil {
		return fmt.Errorf("oplog: watching %s: %w", d.cfg.Dir, err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	scan := func() {
		entries, err := os.ReadDir(d.cfg.Dir)
		if err != nil {
			d.log.Error("reading the oplog folder", "dir", d.cfg.Dir, "err", err)
			return
		}
		for _, e := range entries {
			d.start(stop, procCtx, &wg, e.Name())
		}
	}
	scan()
	tick := time.NewTicker(d.cfg.Poll)
	defer tick.Stop()
	for {
		select {
		case <-stop.Done():
			return nil
		case ev, ok := <-fsw.Events:
			if !ok {
				return nil
			}
			if w := d.start(stop, procCtx, &wg, filepath.Base(ev.Name)); w != nil {
				w.poke()
			}
		case <-fsw.Errors:
			scan() // events may be lost: look
		case <-tick.C:
			scan()
		}
	}
}

// start returns the worker of an oplog file name, starting its delivery
// the first time; nil for a name that is not an oplog.
func (d *Deliverer) start(stop, procCtx context.Context, wg *sync.WaitGroup, file string) *worker {
	id, ok := strings.CutSuffix(file, Suffix)
	if !ok || CheckWorkerID(id) != nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if w, ok := d.workers[id]; ok {
		return w
	}
	w := &worker{d: d, id: id, wake: make(chan struct{}, 1)}
	w.set(StateStarting, nil)
	d.workers[id] = w
	wg.Go(func() { w.run(stop, procCtx) })
	return w
}

// forget drops w, a worker whose oplog does not exist (a file removed, or
// created and removed again by a refused append), so that thousands of
// such names leave no goroutine behind; false when the file is there
// after all. It looks under d.mu, which start takes too: a file created
// after the look has an event that starts a new worker.
func (d *Deliverer) forget(w *worker) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := os.Stat(Path(d.cfg.Dir, w.id)); !errors.Is(err, os.ErrNotExist) {
		return false
	}
	if d.workers[w.id] == w {
		delete(d.workers, w.id)
	}
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

// Name returns the processor's name.
func (d *Deliverer) Name() string { return d.name }

// Version returns the processor's version.
func (d *Deliverer) Version() string { return d.version }

// errStopped ends a worker's loop.
var errStopped = errors.New("oplog: stopped")
