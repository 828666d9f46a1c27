// Package loader turns a folder of plugin files into the newest acceptable
// version of each plugin, without letting a bad file harm the process.
//
// Data flows one way, and every stage either passes a candidate on or
// rejects it with a reason:
//
//	Discover   the folder: names, versions, file types, duplicates
//	CheckFile  the file, read not loaded: ELF headers, Go build info
//	Prober     a child process opens it, finds the accessor, asks IsAcceptable
//	load       this process opens the winner only, once, and asks again
//
// Candidates of one plugin name are tried newest first; the first that
// passes every stage is selected and the older ones are not tried.
package loader

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	version "github.com/hashicorp/go-version"

	"github.com/soplug/soplug/loader/buildcheck"
	"github.com/soplug/soplug/loader/probe"
)

// DefaultDir is the plugins folder when Config.Dir is empty.
const DefaultDir = "plugins"

// DefaultLoadTimeout bounds the in-process calls into the winner when
// Config.LoadTimeout is zero.
const DefaultLoadTimeout = 10 * time.Second

// DefaultMaxFileSize is the largest plugin file a Loader checks when
// Config.MaxFileSize is zero: far above any real plugin (tens of MiB), and
// low enough that a stray huge file in the folder costs one stat.
const DefaultMaxFileSize int64 = 1 << 30

// Config configures a Loader. The zero value reads ./plugins, probes each
// candidate by re-executing this program with probe.Arg, and logs nothing.
type Config struct {
	// Dir is the plugins folder. Empty means DefaultDir.
	Dir string
	// Prober runs the child-process preflight.
	Prober Prober
	// LoadTimeout bounds the calls into the winner in this process. Zero
	// means DefaultLoadTimeout.
	LoadTimeout time.Duration
	// Parallel is how many older candidates are checked and probed at
	// once after the newest one of a plugin was rejected; verdicts are
	// still taken newest first. Zero means GOMAXPROCS; 1 probes one at a
	// time. The newest candidate is always tried alone, so a good newest
	// version costs one probe.
	Parallel int
	// Admit, when set, is asked about each candidate before it is checked;
	// an error rejects the candidate at StageAdmit with that error as the
	// reason (wrapped with ErrNotAdmitted) and the next older one is tried.
	Admit func(*Candidate) error
	// BeforeLoad, when set, is called right before a candidate is opened in
	// this process (by Load, never by Check); an error rejects it at
	// StageLoad. The daemon records there which version it is starting.
	BeforeLoad func(*Candidate) error
	// Process configures out-of-process plugins (executables served by
	// contract/serve).
	Process ProcessConfig
	// Cache, when set, holds the verdicts of earlier selections that
	// depend only on a file and the runner's build: a candidate it has a
	// verdict for is neither checked nor probed again. Nil means none.
	Cache *Cache
	// Runner is the build plugins must match, read with buildcheck; nil
	// means this executable's. A build without package hashes (or an
	// unreadable executable) skips the check, and the probe finds the same.
	Runner *buildcheck.Build
	// MaxFileSize is the size in bytes over which a candidate is rejected
	// at StageCheck (ErrTooLarge) before anything reads it: admission, the
	// cache's hash, the checks. Zero means DefaultMaxFileSize.
	MaxFileSize int64
	// Logger receives progress at debug level: a record before each probe
	// and one for every verdict, with how long it took. Nil means none.
	Logger *slog.Logger
}

// Loader selects plugins from a folder.
type Loader struct {
	cfg Config
	log *slog.Logger
}

// New returns a Loader for cfg.
func New(cfg Config) *Loader {
	if cfg.Dir == "" {
		cfg.Dir = DefaultDir
	}
	if cfg.LoadTimeout <= 0 {
		cfg.LoadTimeout = DefaultLoadTimeout
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxFileSize <= 0 {
		cfg.MaxFileSize = DefaultMaxFileSize
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Loader{cfg: cfg, log: log}
}

// Selection is the outcome of a selection: every entry of the folder with
// its verdict.
type Selection struct {
	// Dir is the folder that was read.
	Dir string `json:"dir"`
	// Candidates are ordered as Discover orders them: by plugin name, newest
	// version first, unparsed names last.
	Candidates []Candidate `json:"candidates"`
	// Loaded is true when the selected plugins were opened in this process
	// (Load), false when only probed (Check).
	Loaded bool `json:"loaded"`
}

// Selected returns the selected candidate of each plugin name, in name
// order.
func (s *Selection) Selected() []*Candidate {
	var out []*Candidate
	for i := range s.Candidates {
		if s.Candidates[i].Verdict == Selected {
			out = append(out, &s.Candidates[i])
		}
	}
	return out
}

// Check selects the newest acceptable version of every plugin in the folder
// by the child-process probe alone; nothing is opened in this process. See
// Load for the error.
func (l *Loader) Check(ctx context.Context) (*Selection, error) {
	return l.run(ctx, false)
}

// Load selects like Check, then opens each winner in this process and asks
// it again; if that fails the next older version is tried. The winners'
// plugin values are in their candidates' Plugin field. The selection is
// returned even with an error. The error wraps ErrNoAcceptable once for each
// plugin name with no acceptable version, ErrNoCandidates when the folder has
// no plugin file at all, a reading error of the folder, or ctx's error; or it
// is a *RejectError wrapping ErrSwapped, after which the process must not
// serve: a file other than the checked one was loaded into it.
func (l *Loader) Load(ctx context.Context) (*Selection, error) {
	return l.run(ctx, true)
}

func (l *Loader) run(ctx context.Context, load bool) (*Selection, error) {
	cands, err := Discover(l.cfg.Dir)
	if err != nil {
		return &Selection{Dir: l.cfg.Dir}, err
	}
	sel := &Selection{Dir: l.cfg.Dir, Candidates: cands, Loaded: load}
	for i := range cands {
		if c := &cands[i]; c.Verdict == Rejected && c.Stage == StageDiscover {
			l.logVerdict(c)
		}
	}
	var errs []error
	named := 0
	taken := map[string]*Candidate{} // plugin path → the selected candidate
	for start := 0; start < len(cands) && cands[start].Version != nil; {
		end := start + 1
		for end < len(cands) && cands[end].Version != nil && cands[end].Name == cands[start].Name {
			end++
		}
		named += end - start
		if err := l.selectOne(ctx, cands[start:end], load, taken); err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrSwapped) {
				return sel, err
			}
			errs = append(errs, err)
		}
		start = end
	}
	if named == 0 {
		return sel, fmt.Errorf("%w in %s", ErrNoCandidates, l.cfg.Dir)
	}
	return sel, errors.Join(errs...)
}

// selectOne tries the versions of one plugin, newest first, until one
// passes every stage. The newest is tried alone; after a rejection, the
// next Parallel candidates are checked and probed at once, and their
// verdicts taken in order.
//
// taken holds the plugin paths of the names selected before; a candidate
// with one of them is rejected, since the process could not load it.
func (l *Loader) selectOne(ctx context.Context, group []Candidate, load bool, taken map[string]*Candidate) error {
	name := group[0].Name
	var pending []*Candidate
	for i := range group {
		if group[i].Verdict != Rejected {
			pending = append(pending, &group[i])
		}
	}
	for pos, window := 0, 1; pos < len(pending); pos, window = pos+window, l.cfg.Parallel {
		batch := pending[pos:min(pos+window, len(pending))]
		errs := make([]error, len(batch))
		took := make([]time.Duration, len(batch))
		var wg sync.WaitGroup
		for i, c := range batch {
			wg.Go(func() {
				start := time.Now()
				errs[i] = l.preflight(ctx, c, taken)
				took[i] = time.Since(start)
			})
		}
		wg.Wait()
		for i, c := range batch {
			err := errs[i]
			if err == nil && load {
				start := time.Now()
				err = l.load(ctx, c)
				took[i] += time.Since(start)
			}
			if err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, ErrSwapped) {
				c.rejectWith(err.(*RejectError))
				return err // unchecked code runs in this process: stop here
			}
			if err != nil {
				var rerr *RejectError
				if !errors.As(err, &rerr) {
					rerr = reject(c.Path, StageProbe, ErrProbe, "%v", err)
				}
				c.rejectWith(rerr)
				l.logVerdict(c, "took", took[i].Round(time.Millisecond))
				continue
			}
			c.Verdict = Selected
			if c.pluginPath != "" {
				taken[c.pluginPath] = c
			}
			l.logVerdict(c, "took", took[i].Round(time.Millisecond))
			for _, older := range batch[i+1:] {
				older.Kind = "" // probed alongside, but older than the winner: not tried
			}
			return nil
		}
	}
	return fmt.Errorf("%w: %s (%d candidates in %s, none acceptable)", ErrNoAcceptable, name, len(group), l.cfg.Dir)
}

// preflight passes one candidate through admission, the checks and the
// probe. The error is a *RejectError or ctx's error.
//
// A verdict in the Cache is taken instead of the checks and the probe; a
// verdict they reach is recorded there.
func (l *Loader) preflight(ctx context.Context, c *Candidate, taken map[string]*Candidate) error {
	c.checked, _ = statID(c.Path) // a file that cannot be stat'ed fails its checks
	if size := int64(c.checked.size); size > l.cfg.MaxFileSize {
		return reject(c.Path, StageCheck, ErrTooLarge, "%s is %s, over the limit of %s (the runner's --max-plugin-size)",
			c.File, byteSize(size), byteSize(l.cfg.MaxFileSize))
	}
	if l.cfg.Admit != nil {
		if err := l.cfg.Admit(c); err != nil {
			return &RejectError{Path: c.Path, Stage: StageAdmit, Err: fmt.Errorf("%w: %w", ErrNotAdmitted, err)}
		}
	}
	v, hash, ok := l.cfg.Cache.lookup(ctx, c)
	if ok {
		l.log.Debug("plugin verdict from the cache", "file", c.File, "plugin", c.Name, "version", c.Version.String(), "ok", v.OK)
		if err := v.apply(c); err != nil {
			return err
		}
		return sameBuild(c, taken)
	}
	l.log.Debug("probing plugin candidate", "file", c.File, "plugin", c.Name, "version", c.Version.String())
	err := l.checkAndProbe(ctx, c, taken)
	if ctx.Err() == nil && !errors.Is(err, ErrSameBuild) {
		l.cfg.Cache.record(ctx, c, hash, err)
	}
	return err
}

// sameBuild rejects c when its build is one taken, selected under another
// name.
func sameBuild(c *Candidate, taken map[string]*Candidate) error {
	if other := taken[c.pluginPath]; c.pluginPath != "" && other != nil {
		return reject(c.Path, StageCheck, ErrSameBuild, "%s is the build of %s, selected for plugin %s (plugin path %s): Go loads a plugin path once per process (\"plugin already loaded\"); build each plugin from its own package",
			c.File, other.File, other.Name, c.pluginPath)
	}
	return nil
}

// checkAndProbe runs the checks and the probe of candidate c.
func (l *Loader) checkAndProbe(ctx context.Context, c *Candidate, taken map[string]*Candidate) error {
	if c.Backend == Process {
		if err := CheckExecutable(c.Path); err != nil {
			return err
		}
		rep, err := l.probeProcess(ctx, c)
		c.Kind = rep.Kind
		if err != nil {
			return err
		}
		return matchVersion(c, rep, StageProbe)
	}
	if err := CheckFile(c.Path); err != nil {
		return err
	}
	pp, err := l.checkBuild(c.Path)
	if err != nil {
		return err
	}
	c.pluginPath = pp
	if err := sameBuild(c, taken); err != nil {
		return err
	}
	rep, err := l.cfg.Prober.Probe(ctx, c.Path)
	c.Kind = rep.Kind
	if err != nil {
		return err
	}
	return matchVersion(c, rep, StageProbe)
}

// load opens a candidate that passed its preflight in this process and asks
// it again. The error is a *RejectError or ctx's error.
func (l *Loader) load(ctx context.Context, c *Candidate) error {
	if l.cfg.BeforeLoad != nil {
		if err := l.cfg.BeforeLoad(c); err != nil {
			return &RejectError{Path: c.Path, Stage: StageLoad, Err: err}
		}
	}
	var rep probe.Report
	var err error
	if c.Backend == Process {
		rep, err = l.loadProcess(ctx, c)
	} else {
		lctx, cancel := context.WithTimeout(ctx, l.cfg.LoadTimeout)
		defer cancel()
		rep, err = loadInProcess(lctx, c.Path, c.checked)
	}
	if err != nil {
		return err
	}
	c.Plugin = rep.Plugin
	if err := matchVersion(c, rep, StageLoad); err != nil {
		if p := processOf(c.Plugin); p != nil {
			p.kill()
		}
		c.Plugin = nil
		return err
	}
	return nil
}

// checkBuild rejects a plugin that links a package the runner also links,
// compiled differently: what plugin.Open would refuse, found without it.
// It returns the plugin's plugin path, or "" when it cannot be read.
func (l *Loader) checkBuild(path string) (string, error) {
	runner, err := l.runner()
	if err != nil {
		l.log.Debug("no build check: cannot read this executable", "err", err)
	}
	if err != nil || len(runner.PkgHashes) == 0 {
		return PluginPath(path), nil // the probe finds what else is wrong with it
	}
	plugin, err := buildcheck.Read(path)
	if err != nil {
		return "", reject(path, StageCheck, ErrNotPlugin, "%v", err)
	}
	if rep := buildcheck.Compare(plugin, runner); !rep.Compatible() {
		return "", reject(path, StageCheck, ErrBuildMismatch, "%s", rep.Summary())
	}
	return pluginPathOf(plugin.Info), nil
}

// PluginPath returns the plugin path the Go plugin at path loads under
// (see pluginPathOf); "" when its build info cannot be read or does not
// show it.
func PluginPath(path string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return ""
	}
	return pluginPathOf(bi)
}

// pluginPathOf returns the plugin path a build loads under: its main
// package's import path. A build of files rather than a package gets a
// path from their content, which the build info does not show: "".
func pluginPathOf(bi *debug.BuildInfo) string {
	if bi.Path == "command-line-arguments" {
		return ""
	}
	return bi.Path
}

// Warm reads, once per process, what checking a new plugin file needs from
// this executable: its own build (build info and package hashes,
// buildcheck.Self), which the first check of a file would otherwise have
// to read before comparing (3 to 6 ms for the runner here). A daemon that
// checks files while it serves calls it once it is ready, off the path of
// any request. The error is the one the build check would meet; the
// checks then go on without it.
func Warm() error {
	_, err := buildcheck.Self()
	return err
}

// runner returns the build plugins must match: Config.Runner, or this
// executable's.
func (l *Loader) runner() (*buildcheck.Build, error) {
	if l.cfg.Runner != nil {
		return l.cfg.Runner, nil
	}
	return buildcheck.Self()
}

// matchVersion rejects a plugin whose Version() is not its file's version.
func matchVersion(c *Candidate, rep probe.Report, stage Stage) error {
	v, err := version.NewSemver(rep.Version)
	if err != nil {
		return reject(c.Path, stage, ErrVersionMismatch, "Version() returned %q, not a version", rep.Version)
	}
	if !v.Equal(c.Version) {
		return reject(c.Path, stage, ErrVersionMismatch, "Version() returned %q, the file name says %s", rep.Version, c.Version)
	}
	return nil
}

func (l *Loader) logVerdict(c *Candidate, attrs ...any) {
	attrs = append([]any{"file", c.File, "plugin", c.Name}, attrs...)
	switch c.Verdict {
	case Selected:
		l.log.Debug("plugin selected", append(attrs, "version", c.Version.String(), "kind", string(c.Kind))...)
	case Rejected:
		l.log.Debug("plugin candidate rejected", append(attrs, "stage", string(c.Stage), "reason", c.Reason)...)
	}
}
