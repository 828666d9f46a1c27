package loader

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	version "github.com/hashicorp/go-version"

	"github.com/soplug/soplug/contract"
)

// Stage names the step of the selection that gave a candidate its verdict.
type Stage string

// The stages a candidate passes through, in order.
const (
	// StageDiscover reads the folder: names, versions, file types.
	StageDiscover Stage = "discover"
	// StageAdmit asks the caller's policy (Config.Admit), e.g. quarantine.
	StageAdmit Stage = "admit"
	// StageCheck reads the file without loading it: ELF headers, Go build
	// info.
	StageCheck Stage = "check"
	// StageProbe opens the plugin in a child process and asks it.
	StageProbe Stage = "probe"
	// StageLoad opens the plugin in this process.
	StageLoad Stage = "load"
)

// Verdict is a candidate's outcome.
type Verdict string

// The verdicts.
const (
	// Selected: the newest acceptable version of its plugin.
	Selected Verdict = "selected"
	// Rejected: refused, for the candidate's Reason.
	Rejected Verdict = "rejected"
	// NotTried: older than the selected version, so not examined.
	NotTried Verdict = "not tried"
)

// Candidate is one entry of the plugins folder and what became of it.
type Candidate struct {
	// File is the entry's name in the folder.
	File string `json:"file"`
	// Path is the folder joined with File.
	Path string `json:"path"`
	// Name is the plugin name parsed from File; empty when it did not parse.
	Name string `json:"name,omitempty"`
	// Version is the version parsed from File; nil when it did not parse.
	Version *version.Version `json:"version,omitempty"`
	// Backend is how the plugin runs: a .so in this process, or an
	// executable in its own.
	Backend Backend `json:"backend,omitempty"`
	// Kind is the plugin's kind, known once the probe has run.
	Kind contract.Kind `json:"kind,omitempty"`
	// Verdict is the outcome.
	Verdict Verdict `json:"verdict"`
	// Stage is the stage that decided a rejection.
	Stage Stage `json:"stage,omitempty"`
	// Reason says why the candidate was rejected, without the file name.
	Reason string `json:"reason,omitempty"`
	// Err is the rejection as an error: a *RejectError wrapping one of the
	// Err* sentinels. Nil unless Verdict is Rejected.
	Err error `json:"-"`
	// Plugin is the selected plugin's value, a contract.Transformer or a
	// contract.OplogProcessor, when it was loaded in this process.
	Plugin contract.Plugin `json:"-"`

	// checked is the file's identity when its checks began.
	checked fileID
	// pluginPath is a native plugin's plugin path (its main package's
	// import path), which Go loads once per process; empty when unknown.
	pluginPath string
}

// PluginPath returns a native plugin's plugin path, the import path of its
// main package, once its checks have read it ("" before, or for a process
// plugin): the package its functions are named by in a stack trace.
func (c *Candidate) PluginPath() string { return c.pluginPath }

func (c *Candidate) rejectWith(err *RejectError) {
	c.Verdict, c.Stage, c.Reason, c.Err = Rejected, err.Stage, err.Err.Error(), err
}

// Discover lists dir and returns every entry as a candidate, ordered by
// plugin name, then newest version first; entries whose name does not parse
// come last. Entries that cannot be plugins (bad names, temporary files,
// directories, symlinks out of dir, duplicate versions) are already Rejected
// with their reason; the rest are NotTried. The error is non-nil only when
// dir itself cannot be read.
func Discover(dir string) ([]Candidate, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("loader: reading plugins folder: %w", err)
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("loader: resolving plugins folder: %w", err)
	}
	cands := make([]Candidate, 0, len(entries))
	for _, e := range entries {
		c := Candidate{File: e.Name(), Path: filepath.Join(dir, e.Name()), Verdict: NotTried}
		if rerr := classify(realDir, &c, e); rerr != nil {
			c.rejectWith(rerr)
		}
		cands = append(cands, c)
	}
	slices.SortStableFunc(cands, compareCandidates)
	markDuplicates(cands)
	return cands, nil
}

// classify parses one entry's name and type.
func classify(realDir string, c *Candidate, e fs.DirEntry) *RejectError {
	if strings.HasPrefix(c.File, ".") {
		return reject(c.Path, StageDiscover, ErrTempFile, "a dotfile")
	}
	if IsTempName(c.File) {
		return reject(c.Path, StageDiscover, ErrTempFile, "a name that copy tools and editors use while writing")
	}
	if strings.HasSuffix(c.File, ".sig") || c.File == "SHA256SUMS" {
		return reject(c.Path, StageDiscover, ErrBadName, "a signature or manifest for the trust checks, not a plugin")
	}
	name, v, backend, err := ParseName(c.File)
	if err != nil {
		return &RejectError{Path: c.Path, Stage: StageDiscover, Err: err}
	}
	c.Name, c.Version, c.Backend = name, v, backend
	mode := e.Type()
	if mode&fs.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(c.Path)
		if err != nil {
			return reject(c.Path, StageDiscover, ErrBrokenSymlink, "%s", brokenLink(c.Path, err))
		}
		if rel, err := filepath.Rel(realDir, target); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return reject(c.Path, StageDiscover, ErrSymlinkEscape, "it leads to %s", target)
		}
		fi, err := os.Stat(target)
		if err != nil {
			return reject(c.Path, StageDiscover, ErrNotRegular, "%v", err)
		}
		mode = fi.Mode().Type()
	}
	if !mode.IsRegular() {
		return reject(c.Path, StageDiscover, ErrNotRegular, "%s", fileType(mode))
	}
	if backend == Process {
		if fi, err := os.Stat(c.Path); err != nil || fi.Mode().Perm()&0o100 == 0 {
			return reject(c.Path, StageDiscover, ErrBadName, "a name without %s is an out-of-process plugin, which must be executable (chmod +x)", Suffix)
		}
	}
	return nil
}

// compareCandidates orders by name, newest version first, unparsed names
// last, and by file name among equals.
func compareCandidates(a, b Candidate) int {
	switch {
	case a.Version == nil && b.Version != nil:
		return 1
	case a.Version != nil && b.Version == nil:
		return -1
	case a.Version != nil:
		if c := cmp.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := b.Version.Compare(a.Version); c != 0 {
			return c
		}
	}
	return cmp.Compare(a.File, b.File)
}

// markDuplicates rejects every candidate that shares its name and version
// with another one still in the running: which of them the operator meant
// cannot be known. cands must be sorted.
func markDuplicates(cands []Candidate) {
	var group []int
	flush := func() {
		if len(group) > 1 {
			for _, k := range group {
				var others []string
				for _, m := range group {
					if m != k {
						others = append(others, cands[m].File)
					}
				}
				c := &cands[k]
				c.rejectWith(reject(c.Path, StageDiscover, ErrDuplicateVersion,
					"%s %s is also named by %s", c.Name, c.Version, strings.Join(others, ", ")))
			}
		}
		group = group[:0]
	}
	for i := range cands {
		c := &cands[i]
		if c.Verdict == Rejected {
			continue
		}
		if len(group) > 0 {
			g := &cands[group[0]]
			if g.Name != c.Name || !g.Version.Equal(c.Version) {
				flush()
			}
		}
		group = append(group, i)
	}
	flush()
}

// fileType names what a file of a non-regular mode is.
func fileType(mode fs.FileMode) string {
	switch {
	case mode.IsDir():
		return "a directory"
	case mode&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case mode&fs.ModeSocket != 0:
		return "a Unix socket"
	case mode&fs.ModeCharDevice != 0:
		return "a character device"
	case mode&fs.ModeDevice != 0:
		return "a block device"
	default:
		return fmt.Sprintf("a file of type %v", mode.Type())
	}
}

// brokenLink says why filepath.EvalSymlinks found no file at the end of
// the link at path (err): a loop, which the kernel's stat calls ELOOP, or a
// target that does not exist, named.
func brokenLink(path string, err error) string {
	var pe *fs.PathError
	_, serr := os.Stat(path)
	switch {
	case errors.Is(serr, syscall.ELOOP):
		return "it goes round a loop of symbolic links (ELOOP)"
	case errors.Is(err, fs.ErrNotExist) && errors.As(err, &pe):
		return "its target " + pe.Path + " does not exist"
	default:
		return err.Error()
	}
}
