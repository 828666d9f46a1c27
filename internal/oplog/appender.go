package oplog

import (
	"container/list"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/inflight"
)

// Defaults for the zero AppenderConfig.
const (
	// DefaultMaxAppendBytes bounds the body of one append request.
	DefaultMaxAppendBytes = 32 << 20
	// DefaultMaxOpenWriters is how many workers' oplogs an Appender keeps
	// open between appends; the least recently used is closed first.
	DefaultMaxOpenWriters = 256
	// AppendWeight is the memory one byte of an append body costs while it
	// is decoded and written (the JSON, the decoded payloads, the records):
	// each byte is charged this many times against the budget.
	AppendWeight = 3
)

// AppendRequest is the body of POST /v1/workers/{id}/oplog.
type AppendRequest struct {
	Entries []AppendEntry `json:"entries"`
	// FirstIndex, on a worker's first append, is the index its oplog
	// starts at (a journal attached to a worker mid-life); zero means 1.
	// On a later append it is zero or the oplog's start.
	FirstIndex uint64 `json:"first_index,omitempty"`
}

// AppendEntry is one entry of an AppendRequest. A zero timestamp means
// the time of the request.
type AppendEntry struct {
	Index     uint64    `json:"index"`
	Timestamp time.Time `json:"timestamp"`
	Kind      string    `json:"kind"`
	Payload   []byte    `json:"payload"` // base64 in JSON
}

// AppendResponse answers a successful append.
type AppendResponse struct {
	Worker    string `json:"worker"`
	Appended  int    `json:"appended"`
	NextIndex uint64 `json:"next_index"`
}

// ErrorResponse is the JSON body of an oplog error. On 409, ExpectedIndex
// is set for a gap (the index the next entry must have), ConflictIndex for
// a resend that differs from the oplog (the first index that differs).
type ErrorResponse struct {
	Error         string `json:"error"`
	ExpectedIndex uint64 `json:"expected_index,omitempty"`
	ConflictIndex uint64 `json:"conflict_index,omitempty"`
}

// AppenderConfig configures an Appender. The zero value appends to ./oplog
// with the defaults above, no budget, no metrics and no log.
type AppenderConfig struct {
	// Dir is the oplog folder. Empty means "oplog".
	Dir string
	// MaxBytes bounds one request's body; larger ones get 413. Zero means
	// DefaultMaxAppendBytes.
	MaxBytes int64
	// MaxOpen bounds the oplogs kept open between appends (one file
	// descriptor each). Zero means DefaultMaxOpenWriters.
	MaxOpen int
	// Budget bounds the bodies in flight across the daemon; each body byte
	// costs AppendWeight. Nil means no bound beyond MaxBytes.
	Budget *inflight.Budget
	// Watermarks receives the committed end of each oplog the Appender
	// holds open, for the deliveries of this process to read no further.
	// Nil means a set of the Appender's own, which no delivery sees.
	Watermarks *Watermarks
	// Metrics receives the appended count; nil means none.
	Metrics *Metrics
	// Logger receives a record per failed append that is the daemon's
	// fault (5xx). Nil means none.
	Logger *slog.Logger
}

// Appender appends entries sent over HTTP to the workers' oplogs. It keeps
// at most MaxOpen Writers open between appends, closing the least recently
// used, and none of a worker whose first append was refused. It is safe
// for concurrent use.
type Appender struct {
	cfg AppenderConfig

	mu     sync.Mutex
	open   map[string]*openWriter
	lru    list.List // of *openWriter, most recently used first
	closed bool
	// fault, in tests, is given to every Writer opened (Writer.fault).
	fault func(worker, op string) error
}

// openWriter is one open Writer; users counts the requests holding it,
// under Appender.mu, and mu orders their appends.
type openWriter struct {
	mu    sync.Mutex
	w     *Writer
	users int
	elem  *list.Element
}

// NewAppender returns an Appender configured by cfg.
func NewAppender(cfg AppenderConfig) *Appender {
	if cfg.Dir == "" {
		cfg.Dir = "oplog"
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxAppendBytes
	}
	if cfg.MaxOpen <= 0 {
		cfg.MaxOpen = DefaultMaxOpenWriters
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Watermarks == nil {
		cfg.Watermarks = NewWatermarks()
	}
	return &Appender{cfg: cfg, open: map[string]*openWriter{}}
}

// OpenWriters returns how many oplogs are open.
func (a *Appender) OpenWriters() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.open)
}

// acquire returns worker's writer, opening it when it is not open, after
// closing the least recently used ones nobody holds to stay within
// MaxOpen. More requests at once than MaxOpen may open more; they are
// closed as they end.
//
// A worker with no oplog yet gets one only for an append that starts at
// its start (start, or 1 when start is zero): any other is an
// *OrderError, and no file is created. A start given for an oplog that
// starts elsewhere is an error wrapping ErrConflict.
func (a *Appender) acquire(worker string, first, start uint64) (*openWriter, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, errors.New("oplog: the appender is closed")
	}
	if ow, ok := a.open[worker]; ok {
		if err := checkStart(ow.w, start); err != nil {
			return nil, err
		}
		ow.users++
		a.lru.MoveToFront(ow.elem)
		return ow, nil
	}
	path := Path(a.cfg.Dir, worker)
	if begin := max(start, 1); first != begin {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil, &OrderError{Path: path, Expected: begin, Got: first}
		}
	}
	a.evict(a.cfg.MaxOpen - 1)
	w, err := OpenWriterAt(a.cfg.Dir, worker, max(start, 1))
	if err != nil {
		return nil, err
	}
	if err := checkStart(w, start); err != nil {
		w.Close()
		return nil, err
	}
	// Published before any append writes: a delivery that sees the bytes
	// of one sees the watermark too.
	w.watermark = a.cfg.Watermarks.hold(worker, w.size)
	if a.fault != nil {
		w.fault = func(op string) error { return a.fault(worker, op) }
	}
	ow := &openWriter{w: w, users: 1}
	ow.elem = a.lru.PushFront(ow)
	a.open[worker] = ow
	return ow, nil
}

// checkStart refuses a start that is not w's oplog's.
func checkStart(w *Writer, start uint64) error {
	if start != 0 && start != w.First() {
		return fmt.Errorf("%w: %s starts at index %d, not at the first_index %d", ErrConflict, w.Path(), w.First(), start)
	}
	return nil
}

// evict closes the least recently used writers nobody holds until at most
// keep are open. It is called with a.mu held.
func (a *Appender) evict(keep int) {
	for e := a.lru.Back(); e != nil && len(a.open) > keep; {
		prev := e.Prev()
		if ow := e.Value.(*openWriter); ow.users == 0 && !ow.w.dirty {
			a.drop(ow) // a dirty one stays open: only it knows where its oplog ends
		}
		e = prev
	}
}

// drop closes ow and forgets it; with a.mu held and nobody holding ow.
func (a *Appender) drop(ow *openWriter) {
	a.lru.Remove(ow.elem)
	delete(a.open, ow.w.worker)
	a.cfg.Watermarks.drop(ow.w.worker)
	if err := ow.w.Close(); err != nil {
		a.cfg.Logger.Warn("closing an oplog", "worker", ow.w.worker, "err", err)
	}
}

// release gives back a writer acquired for one request. A worker whose
// oplog holds no entry after it (its first append was refused) is closed
// and its file, which the Writer created, removed: a refused append
// leaves nothing behind.
func (a *Appender) release(ow *openWriter) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ow.users--
	if ow.users > 0 || a.open[ow.w.worker] != ow {
		return
	}
	if ow.w.Next() == ow.w.First() && ow.w.created {
		a.drop(ow)
		if err := os.Remove(ow.w.Path()); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.cfg.Logger.Warn("removing an empty oplog", "worker", ow.w.worker, "err", err)
		}
		return
	}
	a.evict(a.cfg.MaxOpen)
}

// Close closes every writer; later appends fail.
func (a *Appender) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	var errs []error
	for _, ow := range a.open {
		ow.mu.Lock()
		if ow.w.dirty {
			if err := ow.w.cut(); err != nil {
				a.cfg.Logger.Error("an oplog keeps the bytes of a failed append; the next writer may take them as written",
					"worker", ow.w.worker, "err", err)
			}
		}
		errs = append(errs, ow.w.Close())
		ow.mu.Unlock()
	}
	a.open = map[string]*openWriter{}
	a.lru.Init()
	return errors.Join(errs...)
}

// ServeHTTP serves POST /v1/workers/{id}/oplog: the entries are appended
// and synced to disk before the 200 (Writer.Put: a resend of entries the
// oplog holds, identical, writes nothing and is answered as the first
// send was; of those and more, writes the rest). Statuses: 400 for a bad
// worker ID, body or entry (a timestamp an oplog cannot store, data after
// the request's JSON); 409 for a gap, with the expected index, or for a
// resend that differs from the oplog, with the first differing index; 413 past the size limit; 423 when another process holds
// the worker's oplog; 503 with Retry-After when the daemon's budget for
// bodies in flight cannot hold this one; 507 when the disk is full;
// nothing is appended on any error. Error messages name the oplog by its
// file name, never by its path on the server.
func (a *Appender) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	worker := r.PathValue("id")
	if err := CheckWorkerID(worker); err != nil {
		writeError(w, http.StatusBadRequest, ErrorResponse{Error: err.Error()})
		return
	}
	charge := a.cfg.Budget.Charge()
	defer charge.Release() // the decoded entries live until they are written
	entries, start, code, err := a.decode(w, r, worker, charge)
	if err != nil {
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		writeError(w, code, ErrorResponse{Error: err.Error()})
		return
	}
	ow, err := a.acquire(worker, entries[0].Index, start)
	if err == nil {
		ow.mu.Lock()
		var n int
		n, err = ow.w.Put(entries)
		ow.mu.Unlock()
		a.release(ow)
		if err == nil {
			if a.cfg.Metrics != nil {
				a.cfg.Metrics.appended.Add(float64(n))
			}
			// A resend is answered as its first send was, however much of
			// it was already there.
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(AppendResponse{Worker: worker, Appended: len(entries), NextIndex: entries[len(entries)-1].Index + 1})
			return
		}
	}
	msg := a.public(err)
	var oe *OrderError
	var ce *ConflictError
	switch {
	case errors.As(err, &oe):
		writeError(w, http.StatusConflict, ErrorResponse{Error: msg, ExpectedIndex: oe.Expected})
	case errors.As(err, &ce):
		writeError(w, http.StatusConflict, ErrorResponse{Error: msg, ConflictIndex: ce.Index})
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, ErrorResponse{Error: msg})
	case errors.Is(err, ErrEntry):
		writeError(w, http.StatusBadRequest, ErrorResponse{Error: msg})
	case errors.Is(err, ErrLocked):
		writeError(w, http.StatusLocked, ErrorResponse{Error: msg})
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		a.cfg.Logger.Error("oplog append failed", "worker", worker, "err", err)
		writeError(w, http.StatusInsufficientStorage, ErrorResponse{Error: msg + "; nothing was appended"})
	default:
		a.cfg.Logger.Error("oplog append failed", "worker", worker, "err", err)
		writeError(w, http.StatusInternalServerError, ErrorResponse{Error: msg + "; nothing was appended"})
	}
}

// decode reads the request's entries within MaxBytes and the budget,
// charging them to charge, and returns the status and error of a body it
// refuses.
func (a *Appender) decode(w http.ResponseWriter, r *http.Request, worker string, charge *inflight.Charge) ([]contract.Entry, uint64, int, error) {
	tooBig := fmt.Errorf("the body is larger than %d bytes", a.cfg.MaxBytes)
	if r.ContentLength > a.cfg.MaxBytes {
		return nil, 0, http.StatusRequestEntityTooLarge, tooBig
	}
	if err := a.cfg.Budget.Admit(r.ContentLength * AppendWeight); err != nil {
		return nil, 0, http.StatusServiceUnavailable, fmt.Errorf("%w; retry", err)
	}
	dec := json.NewDecoder(inflight.Reader(http.MaxBytesReader(w, r.Body, a.cfg.MaxBytes), charge, AppendWeight))
	dec.DisallowUnknownFields()
	var req AppendRequest
	err := dec.Decode(&req)
	if err == nil {
		if derr := dec.Decode(new(json.RawMessage)); !errors.Is(derr, io.EOF) {
			err = errors.New("the body continues after the append request's JSON object")
			if derr != nil && !isSyntax(derr) {
				err = derr
			}
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, 0, http.StatusRequestEntityTooLarge, tooBig
	case errors.Is(err, inflight.ErrExhausted):
		return nil, 0, http.StatusServiceUnavailable, fmt.Errorf("%w; retry", err)
	case err != nil:
		return nil, 0, http.StatusBadRequest, fmt.Errorf("the body is not an append request: %w", err)
	case len(req.Entries) == 0:
		return nil, 0, http.StatusBadRequest, errors.New("no entries")
	}
	entries := make([]contract.Entry, len(req.Entries))
	for i, e := range req.Entries {
		// A zero timestamp stays zero: Put stores the time of the request
		// for a new entry, and matches any for one the oplog holds.
		entries[i] = contract.Entry{WorkerID: worker, Index: e.Index, Timestamp: e.Timestamp, Kind: e.Kind, Payload: e.Payload}
	}
	return entries, req.FirstIndex, 0, nil
}

// isSyntax reports whether err is malformed JSON (rather than a failed read).
func isSyntax(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF)
}

// public is err's message for the client: the oplog folder's path is cut,
// leaving the file's name.
func (a *Appender) public(err error) string {
	return strings.ReplaceAll(err.Error(), filepath.Clean(a.cfg.Dir)+string(filepath.Separator), "")
}
