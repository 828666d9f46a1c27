package oplog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/inflight"
)

// Defaults for the zero AppenderConfig.
const (
	// DefaultMaxAppendBytes bounds the body of one append request.
	DefaultMaxAppendBytes = 32 << 20
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

// AppenderConfig configures an Appender. The zero value appends to a
// FileJournal on ./oplog with the defaults above, no budget, no metrics
// and no log.
type AppenderConfig struct {
	// Journal receives the appends. Nil means a FileJournal on Dir.
	Journal Journal
	// Dir is the oplog folder of the FileJournal made when Journal is nil.
	Dir string
	// MaxBytes bounds one request's body; larger ones get 413. Zero means
	// DefaultMaxAppendBytes.
	MaxBytes int64
	// Budget bounds the bodies in flight across the daemon. An append is
	// charged what it holds, as it is allocated: the read buffer, the
	// decoded entries and payloads, then the records its journal writes
	// (MaxAppendCost bounds it). Nil means no bound beyond MaxBytes.
	Budget *inflight.Budget
	// Metrics receives the appended count; nil means none.
	Metrics *Metrics
	// Logger receives a record per failed append that is the daemon's
	// fault (5xx). Nil means none.
	Logger *slog.Logger
}

// Appender appends entries sent over HTTP to a Journal. It is safe for
// concurrent use.
type Appender struct {
	cfg AppenderConfig
}

// NewAppender returns an Appender configured by cfg.
func NewAppender(cfg AppenderConfig) *Appender {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxAppendBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Journal == nil {
		cfg.Journal = NewFileJournal(FileJournalConfig{Dir: cfg.Dir, Logger: cfg.Logger})
	}
	return &Appender{cfg: cfg}
}

// ServeHTTP serves POST /v1/workers/{id}/oplog: the entries are appended
// and synced to disk before the 200 (Writer.Put: a resend of entries the
// oplog holds, identical, writes nothing and is answered as the first
// send was; of those and more, writes the rest). Statuses: 400 for a bad
// worker ID, body or entry (a timestamp an oplog cannot store, data after
// the request's JSON); 409 for a gap, with the expected index, or for a
// resend that differs from the oplog, with the first differing index; 413
// past the size limit; 423 when another process holds the worker's oplog;
// 503 with Retry-After when the daemon's budget for bodies in flight
// cannot hold this one, or the journal is unavailable; 507 when the disk
// is full; nothing is appended on any error.
func (a *Appender) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	worker := r.PathValue("id")
	if err := CheckWorkerID(worker); err != nil {
		writeError(w, http.StatusBadRequest, ErrorResponse{Error: err.Error()})
		return
	}
	charge := a.cfg.Budget.Charge()
	defer charge.Release() // the decoded entries live until they are written
	entries, start, dec, code, err := a.decode(w, r, worker, charge)
	if err != nil {
		switch code {
		case http.StatusServiceUnavailable:
			w.Header().Set("Retry-After", "1")
		case http.StatusRequestTimeout:
			w.Header().Set("Connection", "close") // the rest of the body may still come
		}
		writeError(w, code, ErrorResponse{Error: err.Error()})
		return
	}
	n, err := a.cfg.Journal.Append(r.Context(), worker, start, entries)
	next := entries[len(entries)-1].Index + 1
	dec.free() // the journal keeps nothing of entries (Journal.Append)
	if err == nil {
		if a.cfg.Metrics != nil {
			a.cfg.Metrics.appended.Add(float64(n))
		}
		// A resend is answered as its first send was, however much of it
		// was already there.
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(AppendResponse{Worker: worker, Appended: len(entries), NextIndex: next})
		return
	}
	msg := err.Error()
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
	case errors.Is(err, ErrUnavailable):
		if a.cfg.Metrics != nil {
			a.cfg.Metrics.unavailable.Inc()
		}
		a.cfg.Logger.Error("oplog append failed", "worker", worker, "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, ErrorResponse{Error: msg + "; nothing was appended"})
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		a.cfg.Logger.Error("oplog append failed", "worker", worker, "err", err)
		writeError(w, http.StatusInsufficientStorage, ErrorResponse{Error: msg + "; nothing was appended"})
	default:
		a.cfg.Logger.Error("oplog append failed", "worker", worker, "err", err)
		writeError(w, http.StatusInternalServerError, ErrorResponse{Error: msg + "; nothing was appended"})
	}
}

// decode reads the request's entries within MaxBytes and the budget,
// charging what they hold to charge, with the records they will be
// written as, and returns the status and error of a body it refuses.
func (a *Appender) decode(w http.ResponseWriter, r *http.Request, worker string, charge *inflight.Charge) ([]contract.Entry, uint64, *decoder, int, error) {
	tooBig := fmt.Errorf("the body is larger than %d bytes", a.cfg.MaxBytes)
	if r.ContentLength > a.cfg.MaxBytes {
		return nil, 0, nil, http.StatusRequestEntityTooLarge, tooBig
	}
	// An append holds at least its payloads and their records, 3/4 of the
	// body each: a body the budget cannot hold that much of is refused
	// before it is read.
	if err := a.cfg.Budget.Admit(r.ContentLength / 2 * 3); err != nil {
		return nil, 0, nil, http.StatusServiceUnavailable, fmt.Errorf("%w; retry", err)
	}
	entries, start, dec, err := decodeAppend(http.MaxBytesReader(w, r.Body, a.cfg.MaxBytes), r.ContentLength, worker, charge)
	if err == nil && len(entries) == 0 {
		err = errNoEntries
	}
	if err == nil {
		err = charge.Grow(charge.Held() + RecordBytes(entries))
	}
	if err != nil && dec != nil {
		dec.free()
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return entries, start, dec, 0, nil
	case errors.As(err, &mbe):
		return nil, 0, nil, http.StatusRequestEntityTooLarge, tooBig
	case errors.Is(err, inflight.ErrExhausted):
		return nil, 0, nil, http.StatusServiceUnavailable, fmt.Errorf("%w; retry", err)
	case errors.Is(err, errNoEntries), errors.Is(err, ErrEntry):
		return nil, 0, nil, http.StatusBadRequest, err
	case isSyntax(err) || errors.Is(err, errSyntax):
		return nil, 0, nil, http.StatusBadRequest, fmt.Errorf("the body is not an append request: %w", err)
	case errors.Is(err, errTrailing):
		return nil, 0, nil, http.StatusBadRequest, err
	case isTimeout(err):
		return nil, 0, nil, http.StatusRequestTimeout, fmt.Errorf("reading the body: it did not arrive within the server's read timeout: %w", err)
	default:
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, 0, nil, http.StatusBadRequest, fmt.Errorf("reading the body: %w", err)
		}
		return nil, 0, nil, http.StatusBadRequest, fmt.Errorf("the body is not an append request: %w", err)
	}
}

var errNoEntries = errors.New("no entries")

// isTimeout reports whether err is a read deadline that passed: the
// server's ReadTimeout, a 408.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isSyntax reports whether err is malformed JSON (rather than a failed read).
func isSyntax(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF)
}
