package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/soplug/soplug/loader"
)

// loaderFlags are the flags every command that selects plugins takes.
type loaderFlags struct {
	dir          string
	probeTimeout time.Duration
}

func (f *loaderFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "plugins", loader.DefaultDir, "the plugins folder")
	fs.DurationVar(&f.probeTimeout, "probe-timeout", loader.DefaultProbeTimeout, "how long one plugin's probe child may take")
}

func (f *loaderFlags) config() loader.Config {
	return loader.Config{Dir: f.dir, Prober: loader.Prober{Timeout: f.probeTimeout}}
}

// parse parses args with fs, writing errors to stderr; it fails on
// positional arguments, which no command takes.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) bool {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "runner %s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return false
	}
	return true
}
