package oplog

import (
	"encoding/json"
	"errors"
	"net/http"
)

func writeError(w http.ResponseWriter, code int, body ErrorResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// Status is the oplog's state, served at GET /v1/oplog.
type Status struct {
	// Dir is the oplog folder.
	Dir string `json:"dir"`
	// Journal is "ok", or "degraded: " and why the journal cannot take
	// appends now (a journal elsewhere: its cluster unreachable, or
	// without a quorum).
	Journal string `json:"journal"`
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
	// Journal, when it reports its health (HealthReporter), says so in
	// the status.
	Journal Journal
}

// HealthReporter is a Journal that can say whether it takes appends now:
// nil when it does.
type HealthReporter interface {
	Health() error
}

// Status returns the state of every delivery.
func (c *Control) Status() Status {
	st := Status{Dir: c.Dir, Journal: "ok", Paused: c.Paused.List(), Processors: []ProcessorStatus{}}
	if hr, ok := c.Journal.(HealthReporter); ok {
		if err := hr.Health(); err != nil {
			st.Journal = "degraded: " + err.Error()
		}
	}
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
