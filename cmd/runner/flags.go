package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/soplug/soplug/internal/daemon"
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
	stateDir     string
	owners       uintList
	insecure     bool
	manifest     string
	keys         stringList
	confFile     string
}

// transformFlags configure the transform service of run.
type transformFlags struct {
	maxBody int64
	timeout time.Duration
	budget  *inflight.Budget // set after parsing
}

func (f *transformFlags) register(fs *flag.FlagSet) {
	fs.Int64Var(&f.maxBody, "max-body", transform.DefaultMaxBytes, "the largest component POST /v1/transform accepts, in bytes")
	fs.DurationVar(&f.timeout, "transform-timeout", transform.DefaultTimeout, "each transform request's deadline, passed to the plugins")
}

func (f *transformFlags) config(log *slog.Logger) transform.Config {
	return transform.Config{MaxBytes: f.maxBody, Timeout: f.timeout, Logger: log, Budget: f.budget}
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// uintList is a repeatable (or comma-separated) user ID flag.
type uintList []uint32

func (l *uintList) String() string { return fmt.Sprint(*l) }
func (l *uintList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
		if err != nil {
			return fmt.Errorf("%q is not a user ID", f)
		}
		*l = append(*l, uint32(n))
	}
	return nil
}

func (f *loaderFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "plugins", loader.DefaultDir, "the plugins folder")
	fs.DurationVar(&f.probeTimeout, "probe-timeout", loader.DefaultProbeTimeout, "how long one plugin's probe child may take")
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

// portRange is a FIRST-LAST flag.
type portRange [2]int

func (r *portRange) String() string {
	if r[0] == 0 {
		return ""
	}
	return fmt.Sprintf("%d-%d", r[0], r[1])
}

func (r *portRange) Set(v string) error {
	a, b, ok := strings.Cut(v, "-")
	first, err1 := strconv.Atoi(a)
	last, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || first <= 0 || last < first || last > 65535 {
		return fmt.Errorf("%q is not a port range FIRST-LAST", v)
	}
	*r = portRange{first, last}
	return nil
}

// restartPolicy is the --plugin-max-deaths flag, N/DURATION, and the
// backoff --plugin-restart-backoff sets.
type restartPolicy struct {
	backoff time.Duration
	deaths  int
	window  time.Duration
}

func (r *restartPolicy) String() string {
	if r == nil {
		return ""
	}
	return fmt.Sprintf("%d/%s", r.deaths, r.window)
}

func (r *restartPolicy) Set(v string) error {
	n, d, ok := strings.Cut(v, "/")
	deaths, err1 := strconv.Atoi(n)
	window, err2 := time.ParseDuration(d)
	if !ok || err1 != nil || err2 != nil || deaths < 1 || window <= 0 {
		return fmt.Errorf("%q is not N/DURATION with N at least 1 and a positive duration (e.g. 5/1m)", v)
	}
	r.deaths, r.window = deaths, window
	return nil
}

// positiveDuration is a duration flag that must be above zero.
type positiveDuration struct{ d *time.Duration }

func (p positiveDuration) String() string {
	if p.d == nil {
		return ""
	}
	return p.d.String()
}

func (p positiveDuration) Set(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("%q is not a positive duration", v)
	}
	*p.d = d
	return nil
}
