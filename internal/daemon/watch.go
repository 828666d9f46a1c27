package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/soplug/soplug/loader"
)

// Fingerprint is what of a plugins folder, and of the other files a run
// depends on, can change a selection: for every entry of the folder that
// can (a plugin file, its signature, the manifest), and for every file, its
// type, mode, size, modification time and inode. Folder entries are keyed
// by name, files by path. A README or any other file in the folder is not
// part of it.
type Fingerprint map[string]string

// counts reports whether a folder entry of this name can change a
// selection: a name a plugin can have (<name>_v<semver>.so or an
// executable's <name>_v<semver>), its .sig, or SHA256SUMS.
func counts(name string) bool {
	if loader.IsTempName(name) || strings.HasPrefix(name, ".") {
		return false
	}
	if name == "SHA256SUMS" {
		return true
	}
	_, _, _, err := loader.ParseName(strings.TrimSuffix(name, ".sig"))
	return err == nil
}

// TakeFingerprint reads the fingerprint of dir and of files (a missing
// file has one too).
func TakeFingerprint(dir string, files ...string) (Fingerprint, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("daemon: fingerprint of %s: %w", dir, err)
	}
	fp := Fingerprint{}
	for _, e := range entries {
		if counts(e.Name()) {
			fp[e.Name()] = stamp(filepath.Join(dir, e.Name()))
		}
	}
	for _, f := range files {
		fp[f] = stamp(f)
	}
	return fp, nil
}

// stamp says what a file is now, through symlinks: their target is what
// loads.
func stamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf("%v %d %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano(), ino)
}

// Diff describes how fp differs from old ("added a, changed b, removed
// c"), or returns "" when they are the same.
func (fp Fingerprint) Diff(old Fingerprint) string {
	var added, changed, removed []string
	for name, v := range fp {
		switch ov, ok := old[name]; {
		case !ok:
			added = append(added, name)
		case ov != v:
			changed = append(changed, name)
		}
	}
	for name := range old {
		if _, ok := fp[name]; !ok {
			removed = append(removed, name)
		}
	}
	var parts []string
	for _, p := range []struct {
		verb  string
		names []string
	}{{"added", added}, {"changed", changed}, {"removed", removed}} {
		if len(p.names) > 0 {
			slices.Sort(p.names)
			parts = append(parts, p.verb+" "+strings.Join(p.names, ", "))
		}
	}
	return strings.Join(parts, "; ")
}

// Watcher waits for changes to a plugins folder, or to other files, that
// can alter the selection.
type Watcher struct {
	dir     string
	files   []string
	targets []string // of the folder's symlinks: their stamps are the links'
	quiet   time.Duration
	// atomicQuiet ends a burst that only created, renamed or removed
	// files: a drop by rename or link is whole when it appears.
	atomicQuiet time.Duration
	fsw         *fsnotify.Watcher
	events      atomic.Uint64 // relevant events and watch errors Wait has read
	early       func()        // see OnBurst
}

// NewWatcher watches dir (the folder, not its files), each of files, and
// the target of each plugin symlink in dir (each through its folder, so
// that an editor's write-and-rename, or a target replaced, is seen). A
// burst of events is one change once quiet has passed without another
// event.
func NewWatcher(dir string, quiet time.Duration, files ...string) (*Watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("daemon: watching %s: %w", dir, err)
	}
	w := &Watcher{dir: filepath.Clean(dir), quiet: quiet, atomicQuiet: min(quiet, DefaultAtomicDebounce), fsw: fsw}
	for _, f := range files {
		w.files = append(w.files, filepath.Clean(f))
	}
	for _, t := range symlinkTargets(dir) {
		w.targets = append(w.targets, filepath.Clean(t))
	}
	watched := map[string]bool{}
	for _, d := range append(append([]string{dir}, w.files...), w.targets...) {
		if d != dir {
			d = filepath.Dir(d)
		}
		if watched[d] {
			continue
		}
		watched[d] = true
		if err := fsw.Add(d); err != nil {
			fsw.Close()
			return nil, fmt.Errorf("daemon: watching %s: %w", d, err)
		}
	}
	return w, nil
}

// symlinkTargets returns where the plugin symlinks of dir lead.
func symlinkTargets(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if e.Type()&fs.ModeSymlink == 0 || !counts(e.Name()) {
			continue
		}
		if target, err := filepath.EvalSymlinks(filepath.Join(dir, e.Name())); err == nil {
			out = append(out, target)
		}
	}
	return out
}

// relevant reports whether an event on path can change the fingerprint.
func (w *Watcher) relevant(path string) bool {
	path = filepath.Clean(path)
	if slices.Contains(w.files, path) || slices.Contains(w.targets, path) {
		return true
	}
	return filepath.Dir(path) == w.dir && counts(filepath.Base(path)) || path == w.dir
}

// OnBurst sets f to be called by Wait, on Wait's goroutine, at the first
// relevant event of each burst, before its quiet period: a caller can
// begin work that the change will need (the daemon's prepare stage) while
// the debounce runs. f must not block. Events tells whether the folder
// moved on after f was called.
func (w *Watcher) OnBurst(f func()) { w.early = f }

// Events returns how many relevant events and watch errors Wait has read:
// a count unchanged since some moment means no change was seen after it.
func (w *Watcher) Events() uint64 { return w.events.Load() }

// empty reports whether path is an empty regular file: one just created
// by a copy or a write in place, its content to come (a drop by rename or
// link is whole when it appears, and no plugin is empty).
func empty(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == 0
}

// Close stops watching.
func (w *Watcher) Close() error { return w.fsw.Close() }

// Wait blocks until the fingerprint of the folder and files, taken after a
// quiet period, differs from since, and says how. The quiet period is the
// Watcher's debounce once the burst has written to a file (a copy in
// progress, or a file created empty); a burst of creations, renames and
// removals only (a drop by rename or link, a removal) ends after
// DefaultAtomicDebounce. Events on temporary, partial or hidden names in
// the folder, and on other files in the files' folders, are ignored; a lost-events overflow or a watch error counts as an
// event, so the fingerprint decides. Wait returns ctx's error when ctx ends.
func (w *Watcher) Wait(ctx context.Context, since Fingerprint) (string, error) {
	var quiet <-chan time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	written := false // the burst wrote to a file: wait the whole debounce
	arm := func() {
		w.events.Add(1)
		if quiet == nil && w.early != nil {
			w.early()
		}
		d := w.atomicQuiet
		if written {
			d = w.quiet
		}
		timer.Reset(d)
		quiet = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return "", errors.New("daemon: the folder watch was closed")
			}
			if !w.relevant(ev.Name) {
				continue
			}
			if ev.Has(fsnotify.Write) || ev.Has(fsnotify.Chmod) || ev.Has(fsnotify.Create) && empty(ev.Name) {
				written = true
			}
			arm()
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return "", errors.New("daemon: the folder watch was closed")
			}
			_ = err // ErrEventOverflow or a read error: events may be lost, so look
			written = true
			arm()
		case <-quiet:
			quiet, written = nil, false
			fp, err := TakeFingerprint(w.dir, w.files...)
			if err != nil {
				return "the plugins folder became unreadable: " + err.Error(), nil
			}
			if d := fp.Diff(since); d != "" {
				return d, nil
			}
		}
	}
}
