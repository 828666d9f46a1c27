package oplog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sync"
	"syscall"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/atomicfile"
)

// OrderError is an append whose first entry is not the next index; it
// wraps ErrOutOfOrder.
type OrderError struct {
	// Path is the oplog file.
	Path string
	// Expected is the index the next entry must have.
	Expected uint64
	// Got is the index the append offered (of the first entry out of
	// place).
	Got uint64
}

func (e *OrderError) Error() string {
	return fmt.Sprintf("%v: %s: entry index %d, expected %d", ErrOutOfOrder, e.Path, e.Got, e.Expected)
}

// Unwrap returns ErrOutOfOrder.
func (e *OrderError) Unwrap() error { return ErrOutOfOrder }

// Writer appends entries to one worker's oplog. One Writer per worker may
// exist at a time, across processes: it holds an exclusive lock on the
// file. Writers in workers and the daemon's HTTP endpoint use it alike. It
// is safe for concurrent use: appends that arrive while another's fsync
// is under way are written behind it and share the next fsync (group
// commit).
type Writer struct {
	path   string
	worker string
	f      *os.File
	// created: the file was empty (or held a partial header) and this
	// Writer wrote its header.
	created bool
	// Cut is how many bytes of a torn last record Open cut off: an append
	// a previous writer did not finish, whose caller never heard it
	// succeed.
	Cut   int64
	first uint64 // the index of the first entry

	mu   sync.Mutex
	cond sync.Cond // on mu: a sync ended
	size int64     // where the next record goes (past what is synced while appends wait)
	next uint64    // the index the next entry must have
	// synced and syncedNext are the committed end and the index after
	// it: what the last successful fsync covered.
	synced     int64
	syncedNext uint64
	syncing    bool      // a sync is under way, without mu
	waiting    []*waiter // appends written and not yet synced, oldest first
	syncEach   bool      // no group commit: each append syncs under mu
	fs         *fsSync   // when set, syncs are its, shared across workers
	buf        []byte
	// dirty: a failed append could not be cut off, so the file may hold
	// bytes past size; the next append cuts them first.
	dirty bool
	// watermark, when set, is published the committed end after each
	// sync (watermarks).
	watermark interface{ Store(int64) }
	// fault, in tests, fails a write or a sync as a disk would.
	fault func(op string) error
	// start is where the first record starts; recent, where some of the
	// latest appends did (Put's comparisons).
	start    recordAt
	recent   []recordAt
	recentAt int // the oldest of recent, once it is full
}

// OpenWriter opens worker's oplog in dir for appending, creating it (and
// dir), starting at index 1, when it does not exist. It is
// OpenWriterAt(dir, worker, 1).
func OpenWriter(dir, worker string) (*Writer, error) { return OpenWriterAt(dir, worker, 1) }

// OpenWriterAt opens worker's oplog in dir for appending, creating it (and
// dir) when it does not exist, with first as the index of its first entry
// (a worker whose journal is attached mid-life). An oplog that exists keeps
// the start it has: First says which. It takes the file's lock (ErrLocked when
// another process holds it) and finds the end: a torn last record, left by
// a writer that died in the middle of an append, is cut off; a corrupt
// record is an error, and nothing is changed.
func OpenWriterAt(dir, worker string, first uint64) (*Writer, error) {
	if err := CheckWorkerID(worker); err != nil {
		return nil, err
	}
	if first == 0 {
		return nil, fmt.Errorf("%w: an oplog starts at index 1 or later, not 0", ErrEntry)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("oplog: %w", err)
	}
	path := Path(dir, worker)
	f, err := openLocked(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return nil, err
	}
	w := &Writer{path: path, worker: worker, f: f, first: first}
	w.cond.L = &w.mu
	if err := w.recover(dir); err != nil {
		f.Close()
		return nil, err
	}
	w.synced, w.syncedNext = w.size, w.next
	return w, nil
}

// openLocked opens an oplog with flag and takes its exclusive lock: the
// one writer of a worker, across processes. ErrLocked when another holds
// it.
func openLocked(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		return nil, fmt.Errorf("oplog: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		return nil, fmt.Errorf("oplog: locking %s: %w", path, err)
	}
	return f, nil
}

// recover finds the end of the oplog, writing the header of a new one and
// cutting a torn tail.
func (w *Writer) recover(dir string) error {
	hl, first, err := readHeader(w.f, w.path, w.worker)
	if errors.Is(err, ErrTorn) { // empty, or a header cut short: no record can follow
		h := header(w.worker, w.first)
		if err := w.f.Truncate(0); err != nil {
			return fmt.Errorf("oplog: %w", err)
		}
		if _, err := w.f.WriteAt(h, 0); err != nil {
			return fmt.Errorf("oplog: %w", err)
		}
		if err := w.f.Sync(); err != nil {
			return fmt.Errorf("oplog: %w", err)
		}
		w.size, w.next, w.created = int64(len(h)), w.first, true
		w.start = recordAt{w.first, w.size}
		return syncDir(dir)
	}
	if err != nil {
		return err
	}
	w.first, w.start = first, recordAt{first, hl}
	fi, err := w.f.Stat()
	if err != nil {
		return fmt.Errorf("oplog: %w", err)
	}
	if idx, ok := w.lastRecord(hl, fi.Size()); ok {
		w.size, w.next = fi.Size(), idx+1
		return nil
	}
	// Read it all: the end is torn, or the last record is larger than the
	// window lastRecord searches.
	r := newReader(w.f, w.path, w.worker, hl, first)
	switch err := r.skip(); {
	case errors.Is(err, ErrTorn):
		w.Cut = fi.Size() - r.off
		if err := w.f.Truncate(r.off); err != nil {
			return fmt.Errorf("oplog: cutting the torn end of %s: %w", w.path, err)
		}
		if err := w.f.Sync(); err != nil {
			return fmt.Errorf("oplog: %w", err)
		}
	case err != nil:
		return err
	}
	w.size, w.next = r.off, r.next
	return nil
}

// lastRecord finds the record that ends the file by searching its last
// 64 KiB backwards for a length that reaches exactly the end with a
// matching checksum, and returns its index. It fails when the end is torn
// or the last record is larger.
func (w *Writer) lastRecord(hl, size int64) (uint64, bool) {
	if size == hl {
		return w.first - 1, true
	}
	win := min(size-hl, 64<<10)
	buf := make([]byte, win)
	if _, err := w.f.ReadAt(buf, size-win); err != nil {
		return 0, false
	}
	for back := recHead + bodyFixed; back <= len(buf); back++ {
		rec := buf[len(buf)-back:]
		if int(binary.LittleEndian.Uint32(rec)) != back-recHead {
			continue
		}
		if crc32.Checksum(rec[recHead:], castagnoli) == binary.LittleEndian.Uint32(rec[4:]) {
			return binary.LittleEndian.Uint64(rec[recHead:]), true
		}
	}
	return 0, false
}

// Path returns the oplog file.
func (w *Writer) Path() string { return w.path }

// First returns the index of the oplog's first entry.
func (w *Writer) First() uint64 { return w.first }

// Next returns the index the next appended entry must have.
func (w *Writer) Next() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.next
}

// Append writes entries, whose indexes must run from Next() without a gap,
// to the end of the oplog and syncs it to disk before it returns: an entry
// is durable once Append has returned nil. On any error nothing of this
// append remains (a disk that is full, a wrong index: *OrderError), and the
// oplog is as it was; a failed fsync fails every append it was to cover.
func (w *Writer) Append(entries ...contract.Entry) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range entries {
		if want := w.next + uint64(i); entries[i].Index != want {
			return &OrderError{Path: w.path, Expected: want, Got: entries[i].Index}
		}
		if err := CheckEntry(w.worker, &entries[i]); err != nil {
			return err
		}
	}
	if err := w.stage(entries); err != nil {
		return err
	}
	return w.commit(w.size)
}

// stage writes entries, checked, at the end, without a sync; with mu held.
// On an error what it wrote is cut off.
func (w *Writer) stage(entries []contract.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if w.dirty { // the last failed append left bytes that could not be cut
		if err := w.cut(); err != nil {
			return fmt.Errorf("oplog: %s still holds a failed append's bytes: %w", w.path, err)
		}
	}
	// Sized once: an append's records are all the memory it adds.
	if need := RecordBytes(entries); int64(cap(w.buf)) < need {
		w.buf = make([]byte, 0, need)
	} else {
		w.buf = w.buf[:0]
	}
	for i := range entries {
		w.buf = appendRecord(w.buf, &entries[i])
	}
	if err := w.write(); err != nil {
		return w.undo(fmt.Errorf("oplog: appending to %s: %w", w.path, err))
	}
	w.remember(w.next, w.size)
	w.size += int64(len(w.buf))
	w.next += uint64(len(entries))
	if cap(w.buf) > 1<<20 {
		w.buf = nil // do not keep a large batch's buffer
	}
	return nil
}

// write writes the append's records at the end. In tests, a fault after
// the first half of them fails it there.
func (w *Writer) write() error {
	buf := w.buf
	if w.fault != nil {
		half := len(buf) / 2
		if _, err := w.f.WriteAt(buf[:half], w.size); err != nil {
			return err
		}
		if err := w.fault("write"); err != nil {
			return err
		}
		_, err := w.f.WriteAt(buf[half:], w.size+int64(half))
		return err
	}
	_, err := w.f.WriteAt(buf, w.size)
	return err
}

func (w *Writer) sync() error {
	if w.fault != nil {
		if err := w.fault("sync"); err != nil {
			return err
		}
	}
	if w.fs != nil {
		return w.fs.sync(w.f)
	}
	return w.f.Sync()
}

// undo cuts what a failed append may have written, back to size (the
// end of the appends before it). When that fails too, the writer stays dirty and its next append
// tries again before writing.
func (w *Writer) undo(err error) error {
	if cerr := w.cut(); cerr != nil {
		w.dirty = true
		return errors.Join(err, fmt.Errorf("oplog: undoing the append to %s: %w", w.path, cerr))
	}
	return err
}

// cut truncates the file to size and syncs it; with mu held.
func (w *Writer) cut() error {
	if w.fault != nil {
		if err := w.fault("truncate"); err != nil {
			return err
		}
	}
	if err := w.f.Truncate(w.size); err != nil {
		return err
	}
	w.dirty = false
	_ = w.f.Sync()
	return nil
}

// Close releases the lock and closes the file, after the sync under way,
// if any; appends after it fail. Bytes of a failed append that could not
// be cut off then are cut now: a later writer would take them as written.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.syncing {
		w.cond.Wait()
	}
	var err error
	if w.dirty {
		if cerr := w.cut(); cerr != nil {
			err = fmt.Errorf("oplog: %s keeps the bytes of a failed append past its end: %w", w.path, cerr)
		}
	}
	return errors.Join(err, w.f.Close())
}

// isDirty reports whether a failed append's bytes could not be cut off.
func (w *Writer) isDirty() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dirty
}

// syncDir flushes dir's entries, so that a new file in it survives a crash.
func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("oplog: %w", err)
	}
	return nil
}
