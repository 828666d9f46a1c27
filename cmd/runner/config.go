package main

import (
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
