// Package transform is the HTTP service around Transformer plugins: a
// WebAssembly component (or core module) in, the transformed one out.
//
//	POST /v1/transform           the configured chain, or the one installed transformer
//	POST /v1/transform/{plugin}  one named transformer
//
// The request body is the binary (Content-Type application/wasm); the
// query string overrides configuration keys the installation marks
// overridable (?env=staging). The response is the transformed binary, with
// Soplug-Plugin and Soplug-Plugin-Version naming the plugins that made it,
// in order. Errors are JSON, {"error": ..., "plugin": ..., "version": ...}:
//
//	400  not a WebAssembly binary (magic and version), or a bad override
//	404  no such transformer, or no default one
//	408  the body was still arriving at the server's read timeout
//	413  body past Config.MaxBytes
//	422  the plugin refused the input (Transform returned an error)
//	500  the plugin panicked (recovered and counted) or returned no WebAssembly
//	503  draining for a restart, the daemon's budget for bodies in flight is
//	     exhausted (both with Retry-After), the plugin has no acceptable
//	     version, or its process (out of process) is being restarted
//	504  past Config.Timeout, which the plugin receives as its context's deadline
//
// The body is read once into a buffer that grows as it arrives, up to
// Content-Length with room for appended sections, handed to the plugin,
// which may extend it in place, and written back: memory per request stays
// near the body size, and bodies in flight stay within Config.Budget.
package transform

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/inflight"
	"github.com/soplug/soplug/internal/pluginconf"
	"github.com/soplug/soplug/internal/quarantine"
	"github.com/soplug/soplug/internal/wasm"
)

// Defaults for the zero Config.
const (
	// DefaultMaxBytes is the largest body accepted: 64 MiB.
	DefaultMaxBytes = 64 << 20
	// DefaultTimeout is each request's deadline.
	DefaultTimeout = 30 * time.Second
	// Slack is the room left after the body in the request's buffer, so
	// that a plugin appending sections extends it without a copy.
	Slack = 4 << 10
)

// Response headers.
const (
	// HeaderPlugin names the plugins that transformed the body, in order,
	// comma-separated.
	HeaderPlugin = "Soplug-Plugin"
	// HeaderVersion gives their versions, in the same order.
	HeaderVersion = "Soplug-Plugin-Version"
)

// Config configures a Service. The zero value accepts 64 MiB bodies, gives
// each request 30 s, logs nothing and registers no metrics.
type Config struct {
	// MaxBytes is the largest body accepted; larger ones get 413. Zero
	// means DefaultMaxBytes.
	MaxBytes int64
	// Timeout is each request's deadline, passed to the plugins as their
	// context's; past it the request gets 504. Zero means DefaultTimeout.
	Timeout time.Duration
	// Chain is the order of transformers POST /v1/transform runs. Empty
	// means the one installed transformer.
	Chain []string
	// Registerer receives the service's metrics. Nil means none are
	// exported.
	Registerer prometheus.Registerer
	// Logger receives a record per failed request. Nil means none.
	Logger *slog.Logger
	// HangAfter is how long a call may run past its deadline before Stuck
	// reports it: a Go function cannot be stopped, and the daemon then stops
	// feeding systemd's watchdog, which aborts the runner (SIGABRT) with
	// every goroutine's stack, the stuck call's naming the plugin, which the
	// next start blames. Zero means DefaultHangAfter; negative, never.
	HangAfter time.Duration
	// Budget bounds the bytes of request bodies in flight, shared with the
	// daemon's other services: a body it cannot hold is refused with 503
	// and Retry-After. Nil means no bound beyond MaxBytes per request.
	Budget *inflight.Budget
}

// Plugin is one installed transformer.
type Plugin struct {
	// Name is the plugin's name.
	Name string
	// Version is the loaded version; empty with a nil Transformer.
	Version string
	// Transformer is the loaded plugin; nil when the name is installed but
	// no version of it is acceptable, which makes its requests 503.
	Transformer contract.Transformer
	// Installation is its configuration.
	Installation pluginconf.Installation
	// Mark counts its Transform calls while they run; nil counts nothing.
	Mark *quarantine.Mark
}

// Service serves transform requests. Create it with New.
type Service struct {
	cfg      Config
	plugins  map[string]*Plugin
	names    []string // sorted
	chain    []*Plugin
	draining atomic.Bool
	m        *metrics
	log      *slog.Logger

	mu        sync.Mutex
	abandoned map[*abandonedCall]struct{} // calls past their deadline, still running
}

// abandonedCall is a call that outlived its context.
type abandonedCall struct {
	p        *Plugin
	deadline time.Time
}

// DefaultHangAfter is Config.HangAfter when zero.
const DefaultHangAfter = 60 * time.Second

// Stuck reports the call into a plugin that has run longest past its
// deadline, when that is more than HangAfter: what it is, and true.
func (s *Service) Stuck() (string, bool) {
	if s.cfg.HangAfter < 0 {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldest *abandonedCall
	for c := range s.abandoned {
		if oldest == nil || c.deadline.Before(oldest.deadline) {
			oldest = c
		}
	}
	if oldest == nil {
		return "", false
	}
	past := time.Since(oldest.deadline)
	if past <= s.cfg.HangAfter {
		return "", false
	}
	return fmt.Sprintf("a Transform call into %s %s has run %v past its deadline", oldest.p.Name, oldest.p.Version, past.Round(time.Second)), true
}

// New returns a Service for the installed plugins. An error names a chain
// entry that is not among them.
func New(cfg Config, plugins []Plugin) (*Service, error) {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.HangAfter == 0 {
		cfg.HangAfter = DefaultHangAfter
	}
	s := &Service{cfg: cfg, plugins: map[string]*Plugin{}, log: cfg.Logger, abandoned: map[*abandonedCall]struct{}{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for i := range plugins {
		p := plugins[i]
		if p.Installation.Config == nil {
			p.Installation.Config = contract.Config{}
		}
		s.plugins[p.Name] = &p
	}
	s.names = slices.Sorted(maps.Keys(s.plugins))
	for _, name := range cfg.Chain {
		p, ok := s.plugins[name]
		if !ok {
			return nil, fmt.Errorf("transform: the chain names %q, which is not an installed transformer (installed: %s)", name, strings.Join(s.names, ", "))
		}
		s.chain = append(s.chain, p)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s.m = m
	for _, name := range s.names {
		m.init(s.plugins[name])
	}
	return s, nil
}

// Register adds the service's routes to mux.
func (s *Service) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/transform", s.serveDefault)
	mux.HandleFunc("POST /v1/transform/{plugin}", s.serveNamed)
	mux.HandleFunc("/v1/transform", s.serveMethod)
	mux.HandleFunc("/v1/transform/{plugin}", s.serveMethod)
}

// serveMethod answers a method other than POST with a JSON 405, as every
// other error is.
func (s *Service) serveMethod(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", http.MethodPost)
	s.fail(w, r, failure{code: http.StatusMethodNotAllowed, msg: fmt.Sprintf("method %s is not allowed: POST the component", r.Method)})
}

// Drain makes every later request fail with 503 and a Retry-After, while
// the ones already running finish.
func (s *Service) Drain() { s.draining.Store(true) }

// Error is the JSON body of an error response.
type Error struct {
	Error   string `json:"error"`
	Plugin  string `json:"plugin,omitempty"`
	Version string `json:"version,omitempty"`
}

// failure is an error response on its way out.
type failure struct {
	code  int
	msg   string
	p     *Plugin // the plugin it is counted against; nil for none
	retry bool    // may succeed later: sent with Retry-After
}

func (s *Service) serveDefault(w http.ResponseWriter, r *http.Request) {
	switch {
	case len(s.chain) > 0:
		s.serve(w, r, s.chain)
	case len(s.plugins) == 1:
		s.serve(w, r, []*Plugin{s.plugins[s.names[0]]})
	case len(s.plugins) == 0:
		s.fail(w, r, failure{code: http.StatusServiceUnavailable, msg: "no transformer is installed"})
	default:
		s.fail(w, r, failure{code: http.StatusNotFound, msg: fmt.Sprintf(
			"several transformers are installed (%s): POST /v1/transform/{plugin}, or set chain in the configuration", strings.Join(s.names, ", "))})
	}
}

func (s *Service) serveNamed(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("plugin")
	p, ok := s.plugins[name]
	if !ok {
		s.fail(w, r, failure{code: http.StatusNotFound, msg: fmt.Sprintf("no transformer named %q (installed: %s)", name, strings.Join(s.names, ", "))})
		return
	}
	s.serve(w, r, []*Plugin{p})
}

// serve runs route on the request's body: a raw binary, or Golem's
// multipart form (serveGolem).
func (s *Service) serve(w http.ResponseWriter, r *http.Request, route []*Plugin) {
	first := route[0]
	if s.draining.Load() {
		s.fail(w, r, failure{code: http.StatusServiceUnavailable, msg: "draining for a restart; retry", p: first, retry: true})
		return
	}
	for _, p := range route {
		if p.Transformer == nil {
			s.fail(w, r, failure{code: http.StatusServiceUnavailable, msg: fmt.Sprintf("plugin %s has no acceptable version", p.Name), p: p})
			return
		}
	}
	cfgs, f := s.configs(r, route)
	if f != nil {
		s.fail(w, r, *f)
		return
	}
	if isGolem(r) {
		s.serveGolem(w, r, route, cfgs)
		return
	}
	body, charge, f := s.readBody(w, r, first)
	defer charge.Release()
	if f != nil {
		s.fail(w, r, *f)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	body, f = s.run(ctx, route, body, cfgs)
	if f != nil {
		s.fail(w, r, *f)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/wasm")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	setPluginHeaders(h, route)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// run checks that body is WebAssembly and passes it through route, each
// plugin with its configuration, under ctx.
func (s *Service) run(ctx context.Context, route []*Plugin, body []byte, cfgs []contract.Config) ([]byte, *failure) {
	if _, err := wasm.CheckPreamble(body); err != nil {
		return nil, &failure{code: http.StatusBadRequest, msg: err.Error(), p: route[0]}
	}
	for i, p := range route {
		start := time.Now()
		in := len(body)
		out, f := s.call(ctx, p, body, cfgs[i])
		s.m.observe(p, in, len(out), time.Since(start))
		if f != nil {
			return nil, f
		}
		s.m.count(p, http.StatusOK)
		body = out
	}
	return body, nil
}

// setPluginHeaders names the plugins of route and their versions.
func setPluginHeaders(h http.Header, route []*Plugin) {
	versions := make([]string, len(route))
	for i, p := range route {
		versions[i] = p.Version
	}
	h.Set(HeaderPlugin, names(route))
	h.Set(HeaderVersion, strings.Join(versions, ", "))
}

// configs returns each route plugin's configuration with the request's
// query overrides applied (see override).
func (s *Service) configs(r *http.Request, route []*Plugin) ([]contract.Config, *failure) {
	q, err := parseOverrides(r.URL.RawQuery)
	if err != nil {
		return nil, &failure{code: http.StatusBadRequest, msg: err.Error(), p: route[0]}
	}
	cfgs := make([]contract.Config, len(route))
	for i, p := range route {
		cfgs[i] = maps.Clone(p.Installation.Config)
	}
	return cfgs, override(cfgs, route, q, "override")
}

// override sets values in cfgs, each key in the configuration of every
// plugin of route that lets a request set it. A key given twice, or one no
// plugin of the route lets a request set, is a 400 naming it ("override"
// or "parameter", as what says).
func override(cfgs []contract.Config, route []*Plugin, values url.Values, what string) *failure {
	for _, key := range slices.Sorted(maps.Keys(values)) {
		if len(values[key]) != 1 {
			return &failure{code: http.StatusBadRequest, msg: fmt.Sprintf("%s %q is given %d times", what, key, len(values[key])), p: route[0]}
		}
		used := false
		for i, p := range route {
			if p.Installation.CanOverride(key) {
				cfgs[i][key] = values.Get(key)
				used = true
			}
		}
		if !used {
			var allowed []string
			for _, p := range route {
				allowed = append(allowed, p.Installation.Overridable...)
			}
			return &failure{code: http.StatusBadRequest, p: route[0], msg: fmt.Sprintf(
				"%s: configuration key %q cannot be overridden by a request (overridable: %s)", what, key, orNone(allowed))}
		}
	}
	return nil
}

// call runs one plugin's Transform under ctx, recovering a panic. A plugin
// that outlives ctx is left running (a Go function cannot be stopped) and
// counted as abandoned; its result is dropped.
func (s *Service) call(ctx context.Context, p *Plugin, body []byte, cfg contract.Config) ([]byte, *failure) {
	type result struct {
		out   []byte
		err   error
		panic any
		stack []byte
	}
	done := make(chan result, 1)
	go func() {
		p.Mark.Enter()
		defer p.Mark.Exit()
		defer func() {
			if v := recover(); v != nil {
				done <- result{panic: v, stack: debug.Stack()}
			}
		}()
		out, err := p.Transformer.Transform(ctx, body, cfg)
		done <- result{out: out, err: err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		s.m.abandoned(p)
		c := &abandonedCall{p: p, deadline: time.Now()}
		s.mu.Lock()
		s.abandoned[c] = struct{}{}
		s.mu.Unlock()
		go func() {
			<-done
			s.m.finished(p)
			s.mu.Lock()
			delete(s.abandoned, c)
			s.mu.Unlock()
		}()
		return nil, s.ctxFailure(ctx, p)
	}
	switch {
	case res.panic != nil:
		s.m.panicked(p)
		s.log.Error("transformer panicked", "plugin", p.Name, "version", p.Version, "panic", fmt.Sprint(res.panic), "stack", string(res.stack))
		return nil, &failure{code: http.StatusInternalServerError, p: p, msg: fmt.Sprintf("the plugin panicked: %v", res.panic)}
	case res.err != nil && ctx.Err() != nil:
		return nil, s.ctxFailure(ctx, p)
	case res.err != nil && unavailable(res.err):
		return nil, &failure{code: http.StatusServiceUnavailable, p: p, msg: res.err.Error()}
	case res.err != nil:
		return nil, &failure{code: http.StatusUnprocessableEntity, p: p, msg: res.err.Error()}
	}
	if _, err := wasm.CheckPreamble(res.out); err != nil {
		return nil, &failure{code: http.StatusInternalServerError, p: p, msg: "the plugin returned no WebAssembly binary: " + err.Error()}
	}
	return res.out, nil
}

// unavailable reports whether err says the plugin could not be reached (an
// out-of-process plugin whose process is being restarted): such errors
// have an Unavailable method that returns true.
func unavailable(err error) bool {
	var u interface{ Unavailable() bool }
	return errors.As(err, &u) && u.Unavailable()
}

// ctxFailure is the response when ctx ended during p's call: its deadline
// (504), or the client went away (logged as 499, nobody reads it).
func (s *Service) ctxFailure(ctx context.Context, p *Plugin) *failure {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &failure{code: http.StatusGatewayTimeout, p: p, msg: fmt.Sprintf("the plugin did not finish within %s", s.cfg.Timeout)}
	}
	return &failure{code: statusClientClosed, p: p, msg: "the client closed the request"}
}

// statusClientClosed is nginx's code for a request whose client left.
const statusClientClosed = 499

// fail writes the JSON error response and counts it.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, f failure) {
	s.m.count(f.p, f.code)
	body := Error{Error: f.msg}
	attrs := []any{"status", f.code, "path", r.URL.Path, "err", f.msg}
	if f.p != nil {
		body.Plugin, body.Version = f.p.Name, f.p.Version
		attrs = append(attrs, "plugin", f.p.Name, "version", f.p.Version)
	}
	level := slog.LevelInfo
	if f.code >= 500 {
		level = slog.LevelWarn
	}
	s.log.Log(r.Context(), level, "transform failed", attrs...)
	if f.code == statusClientClosed {
		return
	}
	if f.retry {
		w.Header().Set("Retry-After", "1")
	}
	if f.code == http.StatusRequestTimeout {
		w.Header().Set("Connection", "close") // the rest of the body may still come
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.code)
	_ = json.NewEncoder(w).Encode(body)
}

func orNone(keys []string) string {
	if len(keys) == 0 {
		return "none"
	}
	return strings.Join(slices.Compact(slices.Sorted(slices.Values(keys))), ", ")
}
