package oplog

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/soplug/soplug/contract"
)

// DefaultMaxAppendBytes bounds the body of one append request.
const DefaultMaxAppendBytes = 32 << 20

// AppendRequest is the body of POST /v1/workers/{id}/oplog.
type AppendRequest struct {
	Entries []AppendEntry `json:"entries"`
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

// ErrorResponse is the JSON body of an oplog error; ExpectedIndex is set
// on 409.
type ErrorResponse struct {
	Error         string `json:"error"`
	ExpectedIndex uint64 `json:"expected_index,omitempty"`
}

// Appender appends entries sent over HTTP to the workers' oplogs, keeping
// one Writer per worker open. It is safe for concurrent use.
type Appender struct {
	dir      string
	maxBytes int64
	metrics  *Metrics

	mu      sync.Mutex
	writers map[string]*lockedWriter
	closed  bool
}

type lockedWriter struct {
	sync.Mutex
	w *Writer
}

// NewAppender returns an Appender to the oplogs in dir; bodies past
// maxBytes (0: DefaultMaxAppendBytes) are refused with 413.
func NewAppender(dir string, maxBytes int64, m *Metrics) *Appender {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxAppendBytes
	}
	return &Appender{dir: dir, maxBytes: maxBytes, metrics: m, writers: map[string]*lockedWriter{}}
}

// writer returns worker's writer, opening it the first time.
func (a *Appender) writer(worker string) (*lockedWriter, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, errors.New("oplog: the appender is closed")
	}
	if lw, ok := a.writers[worker]; ok {
		return lw, nil
	}
	w, err := OpenWriter(a.dir, worker)
	if err != nil {
		return nil, err
	}
	lw := &lockedWriter{w: w}
	a.writers[worker] = lw
	return lw, nil
}

// Close closes every writer; later appends fail.
func (a *Appender) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	var errs []error
	for _, lw := range a.writers {
		lw.Lock()
		errs = append(errs, lw.w.Close())
		lw.Unlock()
	}
	return errors.Join(errs...)
}

// ServeHTTP serves POST /v1/workers/{id}/oplog: the entries are appended
// and synced to disk before the 200. Statuses: 400 for a bad worker ID,
// body or entry; 409 for an index that is not the next one, with the
// expected index; 413 past the size limit; 423 when another process holds
// the worker's oplog; 507 when the disk is full; nothing is appended on
// any error.
func (a *Appender) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	worker := r.PathValue("id")
	if err := CheckWorkerID(worker); err != nil {
		writeError(w, http.StatusBadRequest, ErrorResponse{Error: err.Error()})
		return
	}
	var req AppendRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, a.maxBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, ErrorResponse{Error: fmt.Sprintf("the body is larger than %d bytes", a.maxBytes)})
			return
		}
		writeError(w, http.StatusBadRequest, ErrorResponse{Error: "the body is not an append request: " + err.Error()})
		return
	}
	if len(req.Entries) == 0 {
		writeError(w, http.StatusBadRequest, ErrorResponse{Error: "no entries"})
		return
	}
	now := time.Now().UTC()
	entries := make([]contract.Entry, len(req.Entries))
	for i, e := range req.Entries {
		ts := e.Timestamp
		if ts.IsZero() {
			ts = now
		}
		entries[i] = contract.Entry{WorkerID: worker, Index: e.Index, Timestamp: ts, Kind: e.Kind, Payload: e.Payload}
	}
	lw, err := a.writer(worker)
	if err == nil {
		lw.Lock()
		err = lw.w.Append(entries...)
		next := lw.w.Next()
		lw.Unlock()
		if err == nil {
			if a.metrics != nil {
				a.metrics.appended.Add(float64(len(entries)))
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(AppendResponse{Worker: worker, Appended: len(entries), NextIndex: next})
			return
		}
	}
	var oe *OrderError
	switch {
	case errors.As(err, &oe):
		writeError(w, http.StatusConflict, ErrorResponse{Error: err.Error(), ExpectedIndex: oe.Expected})
	case errors.Is(err, ErrEntry):
		writeError(w, http.StatusBadRequest, ErrorResponse{Error: err.Error()})
	case errors.Is(err, ErrLocked):
		writeError(w, http.StatusLocked, ErrorResponse{Error: err.Error()})
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		writeError(w, http.StatusInsufficientStorage, ErrorResponse{Error: err.Error() + "; nothing was appended"})
	default:
		writeError(w, http.StatusInternalServerError, ErrorResponse{Error: err.Error() + "; nothing was appended"})
	}
}

func writeError(w http.ResponseWriter, code int, body ErrorResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// Status is the oplog's state, served at GET /v1/oplog.
type Status struct {
	// Dir is the oplog folder.
	Dir string `json:"dir"`
	// Paused are the deactivated workers.
	Paused []string `json:"paused"`
	// Processors are the deliveries, one per selected OplogProcessor.
	Processors []ProcessorStatus `json:"processors"`
}

// ProcessorStatus is one processor's delivery.
type ProcessorStatus struct {
	Name    string         `json:"name"`
	Version string         `json:"version"`
	Workers []WorkerStatus `json:"workers"`
}

// Control pauses and resumes workers for every Deliverer, and reports
// their status.
type Control struct {
	Dir        string
	Paused     *PauseSet
	Deliverers []*Deliverer
}

// Status returns the state of every delivery.
func (c *Control) Status() Status {
	st := Status{Dir: c.Dir, Paused: c.Paused.List(), Processors: []ProcessorStatus{}}
	if st.Paused == nil {
		st.Paused = []string{}
	}
	for _, d := range c.Deliverers {
		st.Processors = append(st.Processors, ProcessorStatus{Name: d.Name(), Version: d.Version(), Workers: d.Status()})
	}
	return st
}

// SetActive resumes (true) or pauses (false) worker's delivery, durably;
// resuming also unparks it.
func (c *Control) SetActive(worker string, active bool) error {
	if err := c.Paused.Set(worker, !active); err != nil {
		return err
	}
	if active {
		for _, d := range c.Deliverers {
			d.Resume(worker)
		}
	}
	return nil
}

// Register adds GET /v1/oplog and, when control is true,
// POST /v1/workers/{id}/activate and /deactivate to mux.
func (c *Control) Register(mux *http.ServeMux, control bool) {
	mux.HandleFunc("GET /v1/oplog", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(c.Status())
	})
	if !control {
		return
	}
	for path, active := range map[string]bool{"activate": true, "deactivate": false} {
		mux.HandleFunc("POST /v1/workers/{id}/"+path, func(w http.ResponseWriter, r *http.Request) {
			id := r.PathValue("id")
			if err := c.SetActive(id, active); err != nil {
				code := http.StatusInternalServerError
				if errors.Is(err, ErrWorkerID) {
					code = http.StatusBadRequest
				}
				writeError(w, code, ErrorResponse{Error: err.Error()})
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"worker": id, "active": active})
		})
	}
}
