package oplog

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/soplug/soplug/contract"
)

// DefaultMaxOpenWriters is how many workers' oplogs a FileJournal keeps
// open between appends; the least recently used is closed first.
const DefaultMaxOpenWriters = 256

// FileJournalConfig configures a FileJournal. The zero value keeps the
// oplogs in ./oplog and the cursors in ./oplog/.cursors.
type FileJournalConfig struct {
	// Dir is the oplog folder: one <worker>.oplog file per worker. Empty
	// means "oplog".
	Dir string
	// CursorDir keeps each processor's cursors, in a folder named after
	// it. Empty means <Dir>/.cursors.
	CursorDir string
	// MaxOpen bounds the oplogs kept open between appends (one file
	// descriptor each); the least recently used is closed first. Zero
	// means DefaultMaxOpenWriters.
	MaxOpen int
	// Poll is how often Watch lists the folder for an oplog that no file
	// event announced. Zero means DefaultPoll.
	Poll time.Duration
	// Parallel bounds each cursor store's loads and saves at once. Zero
	// means 8.
	Parallel int
	// Sync is how appends are made durable, and what shares a sync: the
	// zero value, SyncAuto, shares one across workers where the file
	// system allows.
	Sync SyncMode
	// Logger receives what a caller cannot be told (a file that could not
	// be closed). Nil means none.
	Logger *slog.Logger
}

// FileJournal is the Journal of a folder of oplog files, one per worker,
// written through Writers and read through Readers. Its own appends are
// read up to their committed watermark; an oplog that another process
// writes (its own Writer) is read to the end of its complete records, and
// announced by the folder's file events.
type FileJournal struct {
	cfg   FileJournalConfig
	marks *watermarks
	fs    *fsSync
	// mode is cfg.Sync resolved for the folder's file system, once it
	// exists; under mu.
	mode SyncMode

	mu     sync.Mutex
	open   map[string]*openWriter
	lru    list.List // of *openWriter, most recently used first
	closed bool
	// fault, in tests, is given to every Writer opened (Writer.fault).
	fault func(worker, op string) error
}

// openWriter is one open Writer; users counts the appends holding it,
// under FileJournal.mu.
type openWriter struct {
	w     *Writer
	users int
	elem  *list.Element
}

// NewFileJournal returns the FileJournal configured by cfg. Nothing is
// created until the first append.
func NewFileJournal(cfg FileJournalConfig) *FileJournal {
	if cfg.Dir == "" {
		cfg.Dir = "oplog"
	}
	if cfg.CursorDir == "" {
		cfg.CursorDir = filepath.Join(cfg.Dir, ".cursors")
	}
	if cfg.MaxOpen <= 0 {
		cfg.MaxOpen = DefaultMaxOpenWriters
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &FileJournal{cfg: cfg, marks: newWatermarks(), open: map[string]*openWriter{}, fs: newFSSync()}
}

// Dir returns the oplog folder.
func (j *FileJournal) Dir() string { return j.cfg.Dir }

// OpenWriters returns how many oplogs are open for appends.
func (j *FileJournal) OpenWriters() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.open)
}

// Append appends entries to worker's oplog with Writer.Put, and syncs them
// before it returns. A worker with no oplog yet gets one only for an
// append that starts at its start: any other is an *OrderError, and no
// file is created. Error messages name the oplog by its file name, not its
// path.
func (j *FileJournal) Append(_ context.Context, worker string, start uint64, entries []contract.Entry) (int, error) {
	if err := CheckWorkerID(worker); err != nil {
		return 0, err
	}
	if len(entries) == 0 {
		return 0, nil
	}
	ow, err := j.acquire(worker, entries[0].Index, start)
	if err != nil {
		return 0, j.public(err)
	}
	n, err := ow.w.Put(entries)
	j.release(ow)
	if err != nil {
		return 0, j.public(err)
	}
	return n, nil
}

// acquire returns worker's writer, opening it when it is not open, after
// closing the least recently used ones nobody holds to stay within
// MaxOpen. More appends at once than MaxOpen may open more; they are
// closed as they end.
func (j *FileJournal) acquire(worker string, first, start uint64) (*openWriter, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil, fmt.Errorf("%w: the journal is closed", ErrUnavailable)
	}
	if ow, ok := j.open[worker]; ok {
		if err := checkStart(ow.w, start); err != nil {
			return nil, err
		}
		ow.users++
		j.lru.MoveToFront(ow.elem)
		return ow, nil
	}
	path := Path(j.cfg.Dir, worker)
	if _, err := Begin(path, false, 0, start, first); err != nil {
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			return nil, err // a first append that does not begin the journal creates nothing
		}
	}
	j.evict(j.cfg.MaxOpen - 1)
	w, err := OpenWriterAt(j.cfg.Dir, worker, max(start, 1))
	if err != nil {
		return nil, err
	}
	if err := checkStart(w, start); err != nil {
		w.Close()
		return nil, err
	}
	// Published before any append writes: a delivery that sees the bytes
	// of one sees the watermark too.
	w.watermark = j.marks.hold(worker, w.size)
	if j.fault != nil {
		w.fault = func(op string) error { return j.fault(worker, op) }
	}
	switch j.syncMode() {
	case SyncEachAppend:
		w.syncEach = true
	case SyncFileSystem:
		w.fs = j.fs
	}
	ow := &openWriter{w: w, users: 1}
	ow.elem = j.lru.PushFront(ow)
	j.open[worker] = ow
	return ow, nil
}

// syncMode returns how this journal's appends are synced, resolving
// SyncAuto on the folder's file system the first time; with j.mu held,
// once the folder exists.
func (j *FileJournal) syncMode() SyncMode {
	if j.mode == SyncAuto {
		j.mode = j.cfg.Sync.resolve(j.cfg.Dir)
	}
	return j.mode
}

// SyncMode returns how appends are synced: the configured mode, or, for
// SyncAuto, the one it chose once the folder exists (SyncAuto before).
func (j *FileJournal) SyncMode() SyncMode {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.mode == SyncAuto && j.cfg.Sync != SyncAuto {
		return j.cfg.Sync
	}
	return j.mode
}

// checkStart refuses a start that is not w's oplog's.
func checkStart(w *Writer, start uint64) error {
	_, err := Begin(w.Path(), true, w.First(), start, 0)
	return err
}

// evict closes the least recently used writers nobody holds until at most
// keep are open. It is called with j.mu held.
func (j *FileJournal) evict(keep int) {
	for e := j.lru.Back(); e != nil && len(j.open) > keep; {
		prev := e.Prev()
		if ow := e.Value.(*openWriter); ow.users == 0 && !ow.w.isDirty() {
			j.drop(ow) // a dirty one stays open: only it knows where its oplog ends
		}
		e = prev
	}
}

// drop closes ow and forgets it; with j.mu held and nobody holding ow.
func (j *FileJournal) drop(ow *openWriter) {
	j.lru.Remove(ow.elem)
	delete(j.open, ow.w.worker)
	j.marks.drop(ow.w.worker)
	if err := ow.w.Close(); err != nil {
		j.cfg.Logger.Warn("closing an oplog", "worker", ow.w.worker, "err", err)
	}
}

// release gives back a writer acquired for one append. A worker whose
// oplog holds no entry after it (its first append was refused) is closed
// and its file, which the Writer created, removed: a refused append
// leaves nothing behind.
func (j *FileJournal) release(ow *openWriter) {
	j.mu.Lock()
	defer j.mu.Unlock()
	ow.users--
	if ow.users > 0 || j.open[ow.w.worker] != ow {
		return
	}
	if ow.w.Next() == ow.w.First() && ow.w.created {
		j.drop(ow)
		if err := os.Remove(ow.w.Path()); err != nil && !errors.Is(err, os.ErrNotExist) {
			j.cfg.Logger.Warn("removing an empty oplog", "worker", ow.w.worker, "err", err)
		}
		return
	}
	j.evict(j.cfg.MaxOpen)
}

// Close closes every writer; later appends fail with ErrUnavailable.
func (j *FileJournal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closed = true
	var errs []error
	for _, ow := range j.open {
		errs = append(errs, ow.w.Close())
	}
	j.open = map[string]*openWriter{}
	j.lru.Init()
	return errors.Join(errs...)
}

// Head returns where worker's oplog starts. ErrNoJournal (and
// os.ErrNotExist) when there is no file; ErrTorn while its header is
// being written.
func (j *FileJournal) Head(_ context.Context, worker string) (Position, error) {
	r, err := j.reader(worker)
	if err != nil {
		return Position{}, err
	}
	defer r.Close()
	return Position{Next: r.First(), At: r.Offset()}, nil
}

// Read reads worker's oplog from at, up to its committed watermark when
// this journal writes it. The file is open for this call only.
func (j *FileJournal) Read(_ context.Context, worker string, at Position, limit, maxBytes int) ([]contract.Entry, Position, error) {
	r, err := j.reader(worker)
	if err != nil {
		return nil, at, err
	}
	defer r.Close()
	r.limit = j.marks.limiter(worker)
	r.Resume(at.At, at.Next)
	entries, err := r.Read(limit, maxBytes)
	return entries, Position{Next: r.Next(), At: r.Offset()}, err
}

func (j *FileJournal) reader(worker string) (*Reader, error) {
	r, err := OpenReader(j.cfg.Dir, worker)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s: %w", ErrNoJournal, worker, err)
	}
	return r, err
}

// Workers lists the workers with an oplog file.
func (j *FileJournal) Workers(context.Context) ([]string, error) {
	entries, err := os.ReadDir(j.cfg.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("oplog: reading the oplog folder: %w", err)
	}
	var out []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), Suffix); ok && CheckWorkerID(id) == nil {
			out = append(out, id)
		}
	}
	return out, nil
}

// Watch tells notify of every file event in the oplog folder (an external
// Writer's append, a file created or removed) and of every append of this
// journal once it is committed (Changed). It lists the folder at the start
// and every Poll (Listed), and after lost events says Changed of every
// worker.
func (j *FileJournal) Watch(ctx context.Context, notify func(worker string, n Notice)) error {
	if err := os.MkdirAll(j.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("oplog: %w", err)
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("oplog: watching %s: %w", j.cfg.Dir, err)
	}
	defer fsw.Close()
	if err := fsw.Add(j.cfg.Dir); err != nil {
		return fmt.Errorf("oplog: watching %s: %w", j.cfg.Dir, err)
	}
	stopMarks := j.marks.onAdvance(func(w string) { notify(w, Changed) })
	defer stopMarks()
	all := func(n Notice) {
		ws, err := j.Workers(ctx)
		if err != nil {
			j.cfg.Logger.Error("listing the oplogs", "dir", j.cfg.Dir, "err", err)
		}
		for _, w := range ws {
			notify(w, n)
		}
	}
	all(Listed) // the oplogs before the watch
	tick := time.NewTicker(j.cfg.Poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fsw.Events:
			if !ok {
				return nil
			}
			if id, ok := strings.CutSuffix(filepath.Base(ev.Name), Suffix); ok && CheckWorkerID(id) == nil {
				notify(id, Changed)
			}
		case err := <-fsw.Errors:
			j.cfg.Logger.Warn("oplog folder events were lost; every worker looks again", "dir", j.cfg.Dir, "err", err)
			all(Changed)
		case <-tick.C:
			all(Listed)
		}
	}
}

// Cursors returns the cursors of the processor named name, in a folder of
// that name in CursorDir.
func (j *FileJournal) Cursors(name string) (CursorStore, error) {
	if err := CheckWorkerID(name); err != nil {
		return nil, fmt.Errorf("oplog: a processor name that cannot name a folder: %q", name)
	}
	return NewFileCursors(filepath.Join(j.cfg.CursorDir, name), j.cfg.Parallel)
}

// public returns err with the oplog folder's path cut from its message,
// leaving file names: the message is for a remote client. errors.Is and
// errors.As see err.
func (j *FileJournal) public(err error) error {
	msg := strings.ReplaceAll(err.Error(), filepath.Clean(j.cfg.Dir)+string(filepath.Separator), "")
	return publicError{err: err, msg: msg}
}

type publicError struct {
	err error
	msg string
}

func (e publicError) Error() string { return e.msg }
func (e publicError) Unwrap() error { return e.err }
