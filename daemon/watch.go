package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/soplug/soplug/loader"
)

// Fingerprint is what of a plugins folder can change a selection: for every
// entry that is not a temporary, partial or hidden name, its type, mode,
// size, modification time and inode.
type Fingerprint map[string]string

// TakeFingerprint reads the fingerprint of dir.
func TakeFingerprint(dir string) (Fingerprint, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("daemon: fingerprint of %s: %w", dir, err)
	}
	fp := Fingerprint{}
	for _, e := range entries {
		if loader.IsTempName(e.Name()) {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name())) // through symlinks: their target is what loads
		if err != nil {
			fp[e.Name()] = "unreadable: " + err.Error()
			continue
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		fp[e.Name()] = fmt.Sprintf("%v %d %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano(), ino)
	}
	return fp, nil
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

// Watcher waits for changes to a plugins folder that can alter the
// selection.
type Watcher struct {
	dir   string
	quiet time.Duration
	fsw   *fsnotify.Watcher
}

// NewWatcher watches dir (the folder, not its files). A burst of events is
// one change once quiet has passed without another event.
func NewWatcher(dir string, quiet time.Duration) (*Watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("daemon: watching %s: %w", dir, err)
	}
	if err := fsw.Add(dir); err != nil {
		fsw.Close()
		return nil, fmt.Errorf("daemon: watching %s: %w", dir, err)
	}
	return &Watcher{dir: dir, quiet: quiet, fsw: fsw}, nil
}

// Close stops watching.
func (w *Watcher) Close() error { return w.fsw.Close() }

// Wait blocks until the folder's fingerprint, taken after a quiet period,
// differs from since, and says how. Events on temporary, partial or hidden
// names are ignored; a lost-events overflow or a watch error counts as an
// event, so the fingerprint decides. Wait returns ctx's error when ctx ends.
func (w *Watcher) Wait(ctx context.Context, since Fingerprint) (string, error) {
	var quiet <-chan time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	arm := func() {
		timer.Reset(w.quiet)
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
			if ev.Name != w.dir && loader.IsTempName(filepath.Base(ev.Name)) {
				continue
			}
			arm()
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return "", errors.New("daemon: the folder watch was closed")
			}
			_ = err // ErrEventOverflow or a read error: events may be lost, so look
			arm()
		case <-quiet:
			quiet = nil
			fp, err := TakeFingerprint(w.dir)
			if err != nil {
				return "the plugins folder became unreadable: " + err.Error(), nil
			}
			if d := fp.Diff(since); d != "" {
				return d, nil
			}
		}
	}
}
