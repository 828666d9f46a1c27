package access

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// CheckEvery is how often a reloading file is looked at (a stat of each of
// its files), at most: on the request path, so never more.
const CheckEvery = time.Second

// reloading holds what load made of a set of files and makes it again when
// one of them changes (its inode, size or modification time), at most every
// CheckEvery, on the first use after that. A load that fails keeps what
// was there, logged and counted: a half-written certificate must not take
// the listener down.
type reloading[T any] struct {
	paths  []string
	load   func() (T, error)
	log    *slog.Logger
	failed func() // counts a failed reload; nil for none

	cur     atomic.Pointer[T]
	mu      sync.Mutex // held by the one goroutine checking
	stamp   string
	checked time.Time
}

// newReloading loads paths once: an error is the caller's, at start.
func newReloading[T any](log *slog.Logger, load func() (T, error), paths ...string) (*reloading[T], error) {
	r := &reloading[T]{paths: paths, load: load, log: log}
	v, err := load()
	if err != nil {
		return nil, err
	}
	r.cur.Store(&v)
	r.stamp, r.checked = stamp(paths), time.Now()
	return r, nil
}

// get returns the current value, reloading it first when it is time to
// look and a file changed. A goroutine that finds another one looking
// takes the current value.
func (r *reloading[T]) get() T {
	if r.mu.TryLock() {
		if time.Since(r.checked) >= CheckEvery {
			r.check()
		}
		r.mu.Unlock()
	}
	return *r.cur.Load()
}

func (r *reloading[T]) check() {
	r.checked = time.Now()
	st := stamp(r.paths)
	if st == r.stamp {
		return
	}
	v, err := r.load()
	if err != nil {
		r.log.Warn("keeping the files loaded before: reloading failed", "files", r.paths, "err", err)
		if r.failed != nil {
			r.failed()
		}
		r.stamp = st // try again when they change again
		return
	}
	r.cur.Store(&v)
	r.stamp = st
	r.log.Info("reloaded", "files", r.paths)
}

// stamp identifies the files' versions: inode, size, modification time.
func stamp(paths []string) string {
	var s string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			s += p + ": " + err.Error() + ";"
			continue
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		s += fmt.Sprintf("%s:%d:%d:%d;", p, ino, fi.Size(), fi.ModTime().UnixNano())
	}
	return s
}
