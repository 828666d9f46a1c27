package transform

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/pluginconf"
	"github.com/soplug/soplug/internal/quarantine"
	"github.com/soplug/soplug/loader"
)

// CheckChain rejects a chain that names a selected plugin of another
// kind.
func CheckChain(conf *pluginconf.File, sel *loader.Selection) error {
	var errs []error
	for _, c := range sel.Selected() {
		for _, name := range conf.Chain {
			if name == c.Name && c.Kind != contract.KindTransformer {
				errs = append(errs, conf.Invalid("chain", "the chain names %s, which is an %s, not a transformer", name, c.Kind))
			}
		}
	}
	return errors.Join(errs...)
}

// DaemonService serves the selected transformers over HTTP: a
// daemon.Service. Fill in its exported fields.
type DaemonService struct {
	// Conf gives each transformer its installation and orders the chain.
	Conf *pluginconf.File
	// Config configures the HTTP service; its Chain and Registerer are
	// set at Start.
	Config Config

	svc   atomic.Pointer[Service]
	marks quarantine.MarkFunc
}

// CountCalls has Start give each transformer its count of calls in flight
// (daemon.CallCounter).
func (t *DaemonService) CountCalls(mark quarantine.MarkFunc) { t.marks = mark }

// Stuck reports a Transform call that has run HangAfter past its deadline
// (see Config.HangAfter): the daemon stops feeding the watchdog for it.
func (t *DaemonService) Stuck() (string, bool) {
	if svc := t.svc.Load(); svc != nil {
		return svc.Stuck()
	}
	return "", false
}

// Start builds the transform service for the selection: every selected
// transformer, and every chained name, whose requests get 503 when no
// version of it is acceptable.
func (t *DaemonService) Start(_ context.Context, sel *loader.Selection, mux *http.ServeMux, reg prometheus.Registerer) error {
	if err := CheckChain(t.Conf, sel); err != nil {
		return err
	}
	if err := t.Config.Budget.Register(reg); err != nil {
		return err
	}
	var plugins []Plugin
	have := map[string]bool{}
	for _, c := range sel.Selected() {
		tr, ok := c.Plugin.(contract.Transformer)
		if !ok {
			continue
		}
		plugins = append(plugins, Plugin{Name: c.Name, Version: c.Version.String(), Transformer: tr, Installation: t.Conf.For(c.Name),
			Mark: t.marks.For(c.Name, c.Version.String())})
		have[c.Name] = true
	}
	for _, name := range t.Conf.Chain {
		if !have[name] {
			plugins = append(plugins, Plugin{Name: name, Installation: t.Conf.For(name)})
		}
	}
	cfg := t.Config
	cfg.Chain, cfg.Registerer = t.Conf.Chain, reg
	svc, err := New(cfg, plugins)
	if err != nil {
		return err
	}
	svc.Register(mux)
	t.svc.Store(svc)
	return nil
}

// Drain refuses new transform requests.
func (t *DaemonService) Drain() {
	if svc := t.svc.Load(); svc != nil {
		svc.Drain()
	}
}

// Stop has nothing to wait for: requests end with the listener's drain.
func (t *DaemonService) Stop(context.Context) error { return nil }
