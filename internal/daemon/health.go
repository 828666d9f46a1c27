package daemon

import (
	"encoding/json"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/soplug/soplug/loader"
)

// PluginHealth names one active plugin.
type PluginHealth struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Version string `json:"version"`
	File    string `json:"file"`
	// Backend is "native" (a .so in this process) or "process".
	Backend string `json:"backend"`
	// Process is the plugin process of a "process" plugin: its PID,
	// restarts and metrics address.
	Process *loader.ProcessStatus `json:"process,omitempty"`
	// State is "serving" for a .so, and the process's state (running,
	// restarting, given up) for a plugin process.
	State string `json:"state"`
	// LastError is why its process last died or failed to start; empty
	// when nothing went wrong.
	LastError string `json:"last_error,omitempty"`

	cand *loader.Candidate
}

// CandidateHealth is one rejected candidate and why.
type CandidateHealth struct {
	File   string `json:"file"`
	Stage  string `json:"stage"`
	Reason string `json:"reason"`
}

// Report is the daemon's health report, served at /v1/health.
type Report struct {
	// Ready is what /readyz says: plugins selected and serving.
	Ready bool `json:"ready"`
	// Status is the line also sent to systemd as STATUS=.
	Status string `json:"status"`
	// PID is this process; it changes with every restart.
	PID int `json:"pid"`
	// Started is when this process started.
	Started time.Time `json:"started"`
	// Plugins are the active plugins.
	Plugins []PluginHealth `json:"plugins"`
	// Rejected are the candidates refused at the last selection.
	Rejected []CandidateHealth `json:"rejected,omitempty"`
	// Services holds each Reporter service's state, by name.
	Services map[string]any `json:"services,omitempty"`
	// Health is one line per plugin name, in the shape of a LOOP plugin's
	// HealthReport (name → error): "ok" for a plugin that serves, else
	// what is wrong with it, a name with no acceptable version included.
	Health map[string]string `json:"health"`
}

// Healthy is the Health value of a plugin that serves.
const Healthy = "ok"

// health is the state the health endpoints serve.
type health struct {
	mu        sync.RWMutex
	rep       Report
	reporters []Reporter
	missing   map[string]string // plugin names with no acceptable version → why
}

func (h *health) addReporter(r Reporter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reporters = append(h.reporters, r)
}

func newHealth() *health {
	return &health{rep: Report{PID: os.Getpid(), Started: time.Now().UTC(), Plugins: []PluginHealth{}}}
}

func (h *health) setSelection(sel *loader.Selection) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rep.Plugins = h.rep.Plugins[:0]
	for _, c := range sel.Selected() {
		h.rep.Plugins = append(h.rep.Plugins, PluginHealth{Name: c.Name, Kind: string(c.Kind), Version: c.Version.String(), File: c.File,
			Backend: string(c.Backend), cand: c})
	}
	h.rep.Rejected = nil
	h.missing = map[string]string{}
	selected := map[string]bool{}
	for _, c := range sel.Selected() {
		selected[c.Name] = true
	}
	for _, c := range sel.Candidates {
		if c.Name != "" && !selected[c.Name] {
			if _, ok := h.missing[c.Name]; !ok { // the newest version's reason
				h.missing[c.Name] = "no acceptable version: " + c.File + ": " + loader.Plain(c.Reason)
			}
		}
		if c.Verdict == loader.Rejected {
			h.rep.Rejected = append(h.rep.Rejected, CandidateHealth{File: c.File, Stage: string(c.Stage), Reason: c.Reason})
		}
	}
}

func (h *health) set(ready bool, status string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rep.Ready, h.rep.Status = ready, status
}

func (h *health) report() Report {
	h.mu.RLock()
	defer h.mu.RUnlock()
	r := h.rep
	r.Plugins = append([]PluginHealth(nil), r.Plugins...)
	r.Health = map[string]string{}
	for name, why := range h.missing {
		r.Health[name] = why
	}
	for i := range r.Plugins {
		p := &r.Plugins[i]
		p.Process = p.cand.ProcessStatus()
		p.State, r.Health[p.Name] = "serving", Healthy
		if p.Process != nil {
			p.State, p.LastError = p.Process.State, p.Process.LastError
			if p.State != loader.ProcessRunning {
				r.Health[p.Name] = p.State + ": " + p.LastError
			}
		}
	}
	r.Rejected = append([]CandidateHealth(nil), r.Rejected...)
	for _, rep := range h.reporters {
		if r.Services == nil {
			r.Services = map[string]any{}
		}
		name, v := rep.Report()
		r.Services[name] = v
	}
	return r
}

// register adds /healthz (the process is alive), /readyz (plugins selected
// and serving, not draining) and /v1/health (the report) to mux.
func (h *health) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		r := h.report()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !r.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(r.Status + "\n"))
	})
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(h.report())
	})
}
