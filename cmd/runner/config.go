package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/soplug/soplug/internal/pluginconf"
	"github.com/soplug/soplug/loader"
)

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
