package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/soplug/soplug/internal/daemon"
	"github.com/soplug/soplug/internal/flagvalue"
	"github.com/soplug/soplug/internal/inflight"
	"github.com/soplug/soplug/internal/quarantine"
	"github.com/soplug/soplug/internal/transform"
	"github.com/soplug/soplug/internal/trust"
	"github.com/soplug/soplug/loader"
)

// loaderFlags are the flags every command that selects plugins takes.
type loaderFlags struct {
	dir          string
	probeTimeout time.Duration
	maxSize      int64
	stateDir     string
	owners       flagvalue.UIDs
	insecure     bool
	manifest     string
	keys         flagvalue.Strings
	confFile     string
}

// transformFlags configure the transform service of run.
type transformFlags struct {
	maxBody   int64
	timeout   time.Duration
	hangAfter time.Duration
	budget    *inflight.Budget // set after parsing
}

func (f *transformFlags) register(fs *flag.FlagSet) {
	fs.Int64Var(&f.maxBody, "max-body", transform.DefaultMaxBytes, "the largest component POST /v1/transform accepts, in bytes")
	fs.DurationVar(&f.timeout, "transform-timeout", transform.DefaultTimeout, "each transform request's deadline, passed to the plugins")
	fs.DurationVar(&f.hangAfter, "hang-after", transform.DefaultHangAfter,
		"how long a Transform call may run past its deadline before the runner stops feeding systemd's watchdog, which aborts it with the stacks that blame the plugin (negative: never)")
}

func (f *transformFlags) config(log *slog.Logger) transform.Config {
	hang := f.hangAfter
	if hang == 0 {
		hang = -1 // "0" on the command line: never, not the default
	}
	return transform.Config{MaxBytes: f.maxBody, Timeout: f.timeout, HangAfter: hang, Logger: log, Budget: f.budget}
}

func (f *loaderFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "plugins", loader.DefaultDir, "the plugins folder")
	fs.DurationVar(&f.probeTimeout, "probe-timeout", loader.DefaultProbeTimeout, "how long one plugin's probe child may take")
	f.maxSize = loader.DefaultMaxFileSize
	fs.Var(flagvalue.Size{N: &f.maxSize}, "max-plugin-size", "a plugin file larger than this (bytes, or with KiB, MiB, GiB) is rejected before anything reads it")
	fs.StringVar(&f.stateDir, "state-dir", os.Getenv("STATE_DIRECTORY"),
		"the folder of the quarantine records (default $STATE_DIRECTORY, which systemd's StateDirectory= sets; empty: no quarantine)")
	fs.Var(&f.owners, "allowed-owner", "a user ID that may own the plugins folder and plugin files (repeatable; default: root and this user)")
	fs.BoolVar(&f.insecure, "insecure-permissions", false, "do not check the owner and mode of plugin files (development only)")
	fs.StringVar(&f.manifest, "manifest", "", "a SHA256SUMS file every plugin must be listed in")
	fs.StringVar(&f.confFile, "config", "", "the plugins' installation configuration, a TOML file (empty: every plugin gets an empty configuration)")
	fs.Var(&f.keys, "trusted-key", "a public key file; when given, every plugin needs a valid .sig by a trusted key (repeatable)")
}

// policy returns the trust policy the flags describe.
func (f *loaderFlags) policy() (*trust.Policy, error) {
	p := &trust.Policy{AllowedOwners: f.owners, InsecurePermissions: f.insecure, Manifest: f.manifest}
	for _, k := range f.keys {
		pub, err := trust.ReadPublicKey(k)
		if err != nil {
			return nil, err
		}
		p.Keys = append(p.Keys, pub)
	}
	return p, nil
}

// admit returns the admission check the daemon runs: trust, then
// quarantine.
func (f *loaderFlags) admit(p *trust.Policy) func(*loader.Candidate) error {
	return daemon.Admission(p, f.store())
}

// store returns the quarantine store of the state directory.
func (f *loaderFlags) store() *quarantine.Store { return &quarantine.Store{Dir: f.stateDir} }

func (f *loaderFlags) config() loader.Config {
	return loader.Config{Dir: f.dir, Prober: loader.Prober{Timeout: f.probeTimeout}, MaxFileSize: f.maxSize}
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
