package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/soplug/soplug/loader"
	"github.com/soplug/soplug/quarantine"
)

// loaderFlags are the flags every command that selects plugins takes.
type loaderFlags struct {
	dir          string
	probeTimeout time.Duration
	stateDir     string
}

func (f *loaderFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "plugins", loader.DefaultDir, "the plugins folder")
	fs.DurationVar(&f.probeTimeout, "probe-timeout", loader.DefaultProbeTimeout, "how long one plugin's probe child may take")
	fs.StringVar(&f.stateDir, "state-dir", os.Getenv("STATE_DIRECTORY"),
		"the folder of the quarantine records (default $STATE_DIRECTORY, which systemd's StateDirectory= sets; empty: no quarantine)")
}

// store returns the quarantine store of the state directory.
func (f *loaderFlags) store() *quarantine.Store { return &quarantine.Store{Dir: f.stateDir} }

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

// parseArgs parses args with fs, flags and positional arguments in any
// order (runner plugins install FILE --name N), and returns the positional
// ones.
func parseArgs(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, bool) {
	fs.SetOutput(stderr)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, false
		}
		if fs.NArg() == 0 {
			return pos, true
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
