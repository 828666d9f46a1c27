// Package deploy places plugin files into a plugins folder and takes them
// out, so that a watching daemon only ever sees a complete, checked file.
//
// Install copies the file under a dotfile name in the plugins folder
// itself (the loader and the daemon's watcher ignore dotfiles), flushes it
// to disk, runs the loader's checks and child-process probe on that very
// copy, and only then gives it its <name>_v<version>.so name, without
// overwriting an existing version unless told to. Remove deletes a version
// after checking that the plugin keeps an acceptable version. Either
// leaves the folder as it was when it refuses.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	version "github.com/hashicorp/go-version"

	"github.com/soplug/soplug/internal/trust"
	"github.com/soplug/soplug/loader"
)

// Refusals, wrapped with the detail.
var (
	// ErrExists: the version is already installed (versions are immutable;
	// a fix is a new version).
	ErrExists = errors.New("deploy: version already installed")
	// ErrChanged: the source file changed while it was copied.
	ErrChanged = errors.New("deploy: source changed while it was copied")
	// ErrRejected: the copy failed a check or the probe.
	ErrRejected = errors.New("deploy: the plugin failed its checks")
	// ErrNotFound: no file holds that version.
	ErrNotFound = errors.New("deploy: no such version")
	// ErrLastVersion: removing the version would leave its plugin with no
	// acceptable version.
	ErrLastVersion = errors.New("deploy: the last acceptable version")
	// ErrUsage: the name or version cannot be told or disagree.
	ErrUsage = errors.New("deploy: name or version")
)

// Install is an installation of one plugin file, with its signature
// FILE.sig when there is one.
type Install struct {
	// Loader checks the file, Admit (the trust policy) included; its Dir is
	// the plugins folder.
	Loader loader.Config
	// Name and Version override the ones in the source file's name.
	Name    string
	Version string
	// Force replaces an installed file of the same version.
	Force bool
	// RequireAcceptable refuses a file whose IsAcceptable() is false on
	// this host. Without it such a file, loadable otherwise, is installed
	// with a note: a release for other hosts, which the runner on each host
	// accepts or passes over as it always does.
	RequireAcceptable bool
	// VerifiesSignatures tells that Loader.Admit verifies signatures (the
	// trust policy has keys). Without it a FILE.sig is only checked to be
	// a well-formed signature, and Installed.Notes says it was not
	// verified.
	VerifiesSignatures bool
}

// Installed is what Install did.
type Installed struct {
	// File is the installed file's name in the plugins folder.
	File string `json:"file"`
	// Name, Version and Kind are the plugin's.
	Name    string `json:"name"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
	// Replaced is true when an installed file of that version was replaced.
	Replaced bool `json:"replaced"`
	// Diagnosis is every check run on the copy.
	Diagnosis loader.Diagnosis `json:"diagnosis"`
	// Notes are what the operator should know that did not refuse the
	// file: a signature installed unverified.
	Notes []string `json:"notes,omitempty"`
}

// Run installs the plugin file src.
func (in Install) Run(ctx context.Context, src string) (Installed, error) {
	var out Installed
	dir := in.Loader.Dir
	if dir == "" {
		dir = loader.DefaultDir
	}
	var v *version.Version
	if in.Version != "" {
		var err error
		if v, err = version.NewSemver(in.Version); err != nil {
			return out, fmt.Errorf("%w: --version %q is not a version: %v", ErrUsage, in.Version, err)
		}
	}
	name := in.Name
	backend := loader.Native
	fname, fv, fb, err := loader.ParseName(filepath.Base(src))
	switch {
	case err == nil:
		backend = fb
	case loader.CheckFile(src) != nil && loader.CheckExecutable(src) == nil:
		backend = loader.Process // an executable, whatever its name
	}
	if err == nil {
		if name != "" && name != fname {
			return out, fmt.Errorf("%w: %s is named for plugin %s, not %s", ErrUsage, src, fname, name)
		}
		if v != nil && !v.Equal(fv) {
			return out, fmt.Errorf("%w: %s is named for version %s, not %s", ErrUsage, src, fv, v)
		}
		name, v = fname, fv
	}
	if name == "" {
		return out, fmt.Errorf("%w: %s is not named <name>_v<semver>.so or <name>_v<semver>; give --name", ErrUsage, src)
	}
	if v != nil && !in.Force {
		existing, err := Files(dir, name, v.String())
		if err != nil {
			return out, err
		}
		if len(existing) > 0 {
			return out, fmt.Errorf("%w: %s %s is %v in %s; a fix is a new version (or use --force)", ErrExists, name, v, existing, dir)
		}
	}

	if _, err := CleanStale(dir); err != nil {
		return out, err
	}
	mode := os.FileMode(0o644)
	if backend == loader.Process {
		mode = 0o755
	}
	tmp, unlock, err := copyInto(dir, src, name, mode)
	if err != nil {
		return out, err
	}
	defer unlock()
	defer os.Remove(tmp) // a no-op once renamed
	// A signature travels with its plugin, checked with the copy.
	sig := ""
	if data, err := os.ReadFile(src + ".sig"); err == nil {
		if _, err := trust.ReadSignature(src + ".sig"); err != nil {
			return out, fmt.Errorf("%w: %w", ErrRejected, err)
		}
		if !in.VerifiesSignatures {
			out.Notes = append(out.Notes, fmt.Sprintf("%s.sig is a well-formed signature, installed but not verified: no trusted key was given (--trusted-key)", filepath.Base(src)))
		}
		sig = tmp + ".sig"
		if err := os.WriteFile(sig, data, 0o644); err != nil {
			return out, fmt.Errorf("deploy: %w", err)
		}
		defer os.Remove(sig)
	}

	l := loader.New(in.Loader)
	d := l.DiagnoseAs(ctx, tmp, name, v, backend)
	d.Path = src // the copy was checked; the operator knows the source
	out.Diagnosis = d
	if err := ctx.Err(); err != nil {
		return out, err
	}
	if !d.Acceptable && d.Loadable() && !in.RequireAcceptable && d.Version != "" {
		why := d.Err()
		var rerr *loader.RejectError
		if errors.As(why, &rerr) {
			why = rerr.Err // its path is the temporary copy's
		}
		out.Notes = append(out.Notes, fmt.Sprintf("%v; installed all the same: it loads, and the runner on each host asks IsAcceptable() there (--require-acceptable refuses it)", why))
	} else if !d.Acceptable {
		err := d.Err()
		var rerr *loader.RejectError
		if errors.As(err, &rerr) {
			err = rerr.Err // its path is the temporary copy's
		}
		return out, fmt.Errorf("%w: %s: %w", ErrRejected, src, err)
	}
	if backend == loader.Native {
		if err := sameBuild(dir, tmp, name); err != nil {
			return out, fmt.Errorf("%w: %s: %w", ErrRejected, src, err)
		}
	}
	out.Name, out.Version, out.Kind = d.Name, d.Version, string(d.Kind)
	ov, _ := version.NewSemver(out.Version)
	out.File = loader.CanonicalName(out.Name, ov, backend)
	target := filepath.Join(dir, out.File)

	existing, err := Files(dir, out.Name, out.Version)
	if err != nil {
		return out, err
	}
	switch {
	case len(existing) > 0 && !in.Force:
		return out, fmt.Errorf("%w: %s %s is %v in %s; a fix is a new version (or use --force)", ErrExists, out.Name, out.Version, existing, dir)
	case len(existing) > 1 || (len(existing) == 1 && existing[0] != out.File):
		return out, fmt.Errorf("%w: %s %s is %v in %s; remove those first", ErrExists, out.Name, out.Version, existing, dir)
	}
	if err := matchOwner(tmp, dir); err != nil {
		return out, err
	}
	if sig != "" {
		// The signature first: the plugin must not be seen without it.
		if err := os.Rename(sig, target+".sig"); err != nil {
			return out, fmt.Errorf("deploy: %w", err)
		}
	}
	if in.Force {
		out.Replaced = len(existing) > 0
		err = os.Rename(tmp, target)
	} else {
		// link(2) refuses to overwrite: a version installed meanwhile wins.
		if err = os.Link(tmp, target); errors.Is(err, os.ErrExist) {
			return out, fmt.Errorf("%w: %s appeared while installing", ErrExists, target)
		}
	}
	if err != nil {
		return out, fmt.Errorf("deploy: %w", err)
	}
	os.Remove(tmp)
	return out, syncDir(dir)
}

// copyInto copies src into a dotfile of dir with mode and flushes it,
// refusing a source that changes meanwhile. The copy is locked until
// unlock is called, so that CleanStale leaves it alone.
func copyInto(dir, src, name string, mode os.FileMode) (tmp string, unlock func(), err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", nil, fmt.Errorf("deploy: %w", err)
	}
	defer in.Close()
	before, err := in.Stat()
	if err != nil {
		return "", nil, fmt.Errorf("deploy: %w", err)
	}
	if !before.Mode().IsRegular() {
		return "", nil, fmt.Errorf("%w: %s is not a regular file", ErrUsage, src)
	}
	out, err := os.CreateTemp(dir, "."+name+installInfix+"*"+installSuffix)
	if err != nil {
		return "", nil, fmt.Errorf("deploy: %w", err)
	}
	tmp = out.Name()
	lock, err := os.Open(tmp) // its own open file: the lock outlives out's Close
	if err == nil {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err != nil {
		out.Close()
		os.Remove(tmp)
		return "", nil, fmt.Errorf("deploy: locking %s: %w", tmp, err)
	}
	unlock = func() { lock.Close() }
	fail := func(err error) (string, func(), error) {
		unlock()
		os.Remove(tmp)
		return "", nil, err
	}
	n, cerr := io.Copy(out, in)
	serr := out.Sync()
	err = errors.Join(cerr, serr, out.Chmod(mode), out.Close())
	if err != nil {
		return fail(fmt.Errorf("deploy: copying %s: %w", src, err))
	}
	after, err := os.Stat(src)
	if err != nil || n != before.Size() || after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
		return fail(fmt.Errorf("%w: %s was %d bytes, then %d (copied %d); is it still being written?",
			ErrChanged, src, before.Size(), sizeOf(after), n))
	}
	return tmp, unlock, nil
}

// The names of install's temporary copies: .<name>-install-<random>.so.tmp.
const (
	installInfix  = "-install-"
	installSuffix = ".so.tmp"
)

// CleanStale removes the temporary copies (and their .sig) that installs
// killed part-way left in dir, and returns their names. A copy an install
// still holds is locked, and left alone.
func CleanStale(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("deploy: %w", err)
	}
	var removed []string
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(n, ".") || !strings.Contains(n, installInfix) || !strings.HasSuffix(n, installSuffix) {
			continue
		}
		path := filepath.Join(dir, n)
		f, err := os.Open(path)
		if err != nil {
			continue // gone meanwhile
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			// Unlocked: its install is dead. Removed while locked by us,
			// so no install can take it meanwhile.
			if rerr := os.Remove(path); rerr == nil || errors.Is(rerr, os.ErrNotExist) {
				removed = append(removed, n)
			}
			_ = os.Remove(path + ".sig")
		}
		f.Close()
	}
	return removed, nil
}

// sameBuild refuses a native plugin whose build (plugin path) is already
// in dir under another plugin name: the runner could not load both.
func sameBuild(dir, tmp, name string) error {
	pp := loader.PluginPath(tmp)
	if pp == "" {
		return nil
	}
	cands, err := loader.Discover(dir)
	if err != nil {
		return nil
	}
	for _, c := range cands {
		if c.Name == "" || c.Name == name || c.Backend != loader.Native {
			continue
		}
		if loader.PluginPath(c.Path) == pp {
			return fmt.Errorf("%w: it is the build of %s (plugin %s, plugin path %s), and Go loads a plugin path once per process (\"plugin already loaded\"); build each plugin from its own package",
				loader.ErrSameBuild, c.File, c.Name, pp)
		}
	}
	return nil
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}

// matchOwner gives the file the plugins folder's owner when this process
// may (running as root).
func matchOwner(path, dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := os.Chown(path, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("deploy: %w", err)
		}
	}
	return nil
}

// Files returns the files of dir that name version ver of plugin name.
func Files(dir, name, ver string) ([]string, error) {
	v, err := version.NewSemver(ver)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not a version", ErrUsage, ver)
	}
	cands, err := loader.Discover(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, c := range cands {
		if c.Name == name && c.Version != nil && c.Version.Equal(v) {
			files = append(files, c.File)
		}
	}
	return files, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("deploy: syncing %s: %w", dir, err)
	}
	return nil
}
