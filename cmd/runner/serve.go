package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/loader"
	"github.com/soplug/soplug/pluginconf"
	"github.com/soplug/soplug/transform"
)

// exitConfig is the exit status for a configuration file that does not
// validate (EX_CONFIG).
const exitConfig = 78

// loadConfig reads the installation configuration at path and checks it
// against the plugin names in dir. An empty path is the zero File: every
// plugin gets an empty configuration.
func loadConfig(path, dir string) (*pluginconf.File, error) {
	if path == "" {
		return &pluginconf.File{}, nil
	}
	f, err := pluginconf.Load(path)
	if err != nil {
		return nil, err
	}
	cands, err := loader.Discover(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, c := range cands {
		if c.Name != "" {
			names = append(names, c.Name)
		}
	}
	return f, f.Validate(names)
}

// checkChain rejects a chain that names a selected plugin of another kind.
func checkChain(conf *pluginconf.File, sel *loader.Selection) error {
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

// transformService serves the selected transformers over HTTP: a
// daemon.Service.
type transformService struct {
	conf *pluginconf.File
	cfg  transform.Config
	svc  *transform.Service
}

// Start builds the transform service for the selection: every selected
// transformer, and every chained name, whose requests get 503 when no
// version of it is acceptable.
func (t *transformService) Start(_ context.Context, sel *loader.Selection, mux *http.ServeMux, reg prometheus.Registerer) error {
	if err := checkChain(t.conf, sel); err != nil {
		return err
	}
	if err := t.cfg.Budget.Register(reg); err != nil {
		return err
	}
	var plugins []transform.Plugin
	have := map[string]bool{}
	for _, c := range sel.Selected() {
		tr, ok := c.Plugin.(contract.Transformer)
		if !ok {
			continue
		}
		plugins = append(plugins, transform.Plugin{Name: c.Name, Version: c.Version.String(), Transformer: tr, Installation: t.conf.For(c.Name)})
		have[c.Name] = true
	}
	for _, name := range t.conf.Chain {
		if !have[name] {
			plugins = append(plugins, transform.Plugin{Name: name, Installation: t.conf.For(name)})
		}
	}
	cfg := t.cfg
	cfg.Chain, cfg.Registerer = t.conf.Chain, reg
	svc, err := transform.New(cfg, plugins)
	if err != nil {
		return err
	}
	svc.Register(mux)
	t.svc = svc
	return nil
}

// Drain refuses new transform requests.
func (t *transformService) Drain() {
	if t.svc != nil {
		t.svc.Drain()
	}
}

// Stop has nothing to wait for: requests end with the listener's drain.
func (t *transformService) Stop(context.Context) error { return nil }

// describeConfig says what configuration a plugin gets, for the check
// command: "env=prod team=edge (a request may set: env)".
func describeConfig(in pluginconf.Installation) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(in.Config)) {
		parts = append(parts, k+"="+in.Config[k])
	}
	s := strings.Join(parts, " ")
	if s == "" {
		s = "(none)"
	}
	switch {
	case slices.Contains(in.Overridable, pluginconf.AnyKey):
		s += " (a request may set any key)"
	case len(in.Overridable) > 0:
		s += fmt.Sprintf(" (a request may set: %s)", strings.Join(in.Overridable, ", "))
	}
	return s
}
