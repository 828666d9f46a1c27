package loader

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/atomicfile"
)

// cacheFormat heads every verdict cache file; a file with another is
// foreign and ignored.
const cacheFormat = "soplug-verdicts-1"

// Cache keeps the verdicts of the check stage and the probe that depend on
// nothing but a file and the runner's build, so that the next selection,
// in the next process, need not check and probe that file again: a
// candidate that passed (its kind, its Version(), IsAcceptable() true,
// which the in-process load asks again anyway), and the rejections of the
// check stage and of a missing, mistyped or nil accessor or a Version()
// that is not the file's. It keeps no verdict that depends on the host or
// the moment: IsAcceptable() false, a panic, a crash, a timeout, a
// plugin.Open error, or the same build selected under another name.
//
// A verdict is used only for the same file (its device, inode, size,
// modification and change times, and a hash of its content) and the same
// runner build; anything else is a miss. A cache file that does not parse,
// or was written by another runner build, is ignored with a warning and
// replaced at the next Save. Create it with OpenCache; the nil *Cache
// holds nothing. It is safe for concurrent use.
type Cache struct {
	path   string
	runner string
	log    *slog.Logger

	mu      sync.Mutex
	entries map[string]verdict // by file name
	dirty   bool

	hits, misses atomic.Int64
}

// verdict is one cached verdict.
type verdict struct {
	ID         string `json:"id"`   // the file's identity
	Hash       string `json:"hash"` // xxhash64 of its content
	OK         bool   `json:"ok"`
	Kind       string `json:"kind,omitempty"`
	Version    string `json:"version,omitempty"` // what Version() returned
	PluginPath string `json:"plugin_path,omitempty"`
	Stage      string `json:"stage,omitempty"`
	Sentinel   string `json:"sentinel,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// cacheFile is the file's shape.
type cacheFile struct {
	Format string `json:"format"`
	Runner string `json:"runner"`
	// Sum is the SHA-256 of the runner and the entries: a file edited by
	// hand or cut short does not match it.
	Sum     string             `json:"sum"`
	Entries map[string]verdict `json:"entries"`
}

// sum is the checksum of a cache's runner and entries.
func sum(runner string, entries map[string]verdict) string {
	data, _ := json.Marshal(entries) // map keys sorted: the same entries, the same bytes
	h := sha256.New()
	h.Write([]byte(runner + "\n"))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// cacheable are the rejections a Cache keeps, by name.
var cacheable = map[string]error{
	"empty": ErrEmpty, "not-elf": ErrNotELF, "wrong-arch": ErrWrongArch, "truncated": ErrTruncated,
	"not-plugin": ErrNotPlugin, "not-executable": ErrNotExecutable, "build-mismatch": ErrBuildMismatch,
	"no-accessor": ErrNoAccessor, "accessor-type": ErrAccessorType, "nil-plugin": ErrNilPlugin,
	"version-mismatch": ErrVersionMismatch,
}

// OpenCache reads the verdict cache at path for the runner build runner
// (RunnerBuild). A missing file is an empty cache; one that does not parse
// or belongs to another build is logged to log and ignored.
func OpenCache(path, runner string, log *slog.Logger) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cache{path: path, runner: runner, log: log, entries: map[string]verdict{}}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return c
	case err != nil:
		log.Warn("verdict cache unreadable; ignored", "path", path, "err", err)
		return c
	}
	var f cacheFile
	switch err := json.Unmarshal(data, &f); {
	case err != nil:
		log.Warn("verdict cache corrupt; ignored", "path", path, "err", err)
	case f.Format != cacheFormat:
		log.Warn("verdict cache of another format; ignored", "path", path, "format", f.Format)
	case f.Runner != runner:
		log.Info("verdict cache of another runner build; ignored", "path", path, "its_runner", f.Runner, "runner", runner)
	case f.Sum != sum(f.Runner, f.Entries):
		log.Warn("verdict cache tampered with (its checksum does not match its entries); ignored", "path", path)
	default:
		if f.Entries != nil {
			c.entries = f.Entries
		}
	}
	return c
}

// Hits and Misses count the lookups that found a verdict and those that
// did not.
func (c *Cache) Hits() int64 {
	if c == nil {
		return 0
	}
	return c.hits.Load()
}

// Misses: see Hits.
func (c *Cache) Misses() int64 {
	if c == nil {
		return 0
	}
	return c.misses.Load()
}

// Forget drops the verdicts of a plugin version: a quarantine decision
// about it (it crashed the daemon, or its process died too often) sends it
// through the probe again.
func (c *Cache) Forget(name, version string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for file := range c.entries {
		if n, v, _, err := ParseName(file); err == nil && n == name && v.String() == version {
			delete(c.entries, file)
			c.dirty = true
		}
	}
}

// Save writes the cache, when it changed, for the next process to read. It
// does not sync it (atomicfile.Replace): the cache is checked as it is
// read, and one that a machine's crash left empty, torn or old costs only
// the probes it would have saved; a drop's prepare stage, which saves it,
// waits two syncs less.
func (c *Cache) Save() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dirty {
		return nil
	}
	data, err := json.Marshal(cacheFile{Format: cacheFormat, Runner: c.runner, Sum: sum(c.runner, c.entries), Entries: c.entries})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o750); err != nil {
		return fmt.Errorf("loader: verdict cache: %w", err)
	}
	if err := atomicfile.Replace(c.path, data, 0o640); err != nil {
		return fmt.Errorf("loader: verdict cache: %w", err)
	}
	c.dirty = false
	return nil
}

// String renders a file identity for the cache.
func (id fileID) String() string {
	return fmt.Sprintf("%d:%d:%d:%d.%09d:%d.%09d", id.dev, id.ino, id.size, id.mtime.Sec, id.mtime.Nsec, id.ctime.Sec, id.ctime.Nsec)
}

// hashFile is the content hash a verdict is kept under. It reads in 64 KiB
// chunks (one buffer per file, as io.Copy's 32 KiB was, not a MiB for each
// candidate of a start) and stops with ctx's error between them, so that a
// stop (SIGTERM) during a start ends the read of a large file at once.
func hashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := xxhash.New()
	buf := make([]byte, 64<<10)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return strconv.FormatUint(h.Sum64(), 16), nil
		}
		if err != nil {
			return "", err
		}
	}
}

// lookup returns the verdict cached for candidate c, whose identity
// (c.checked) was taken when its checks began, and the hash of its content
// (for record, after a miss).
func (c *Cache) lookup(ctx context.Context, cand *Candidate) (verdict, string, bool) {
	if c == nil {
		return verdict{}, "", false
	}
	c.mu.Lock()
	v, ok := c.entries[cand.File]
	c.mu.Unlock()
	id := cand.checked.String()
	if !ok || v.ID != id {
		c.misses.Add(1)
		return verdict{}, "", false
	}
	hash, err := hashFile(ctx, cand.Path)
	if err != nil || hash != v.Hash {
		c.misses.Add(1)
		return verdict{}, hash, false
	}
	c.hits.Add(1)
	return v, hash, true
}

// record keeps the verdict err (nil: passed) of candidate c when it is one
// a Cache keeps, and drops any other.
func (c *Cache) record(ctx context.Context, cand *Candidate, hash string, err error) {
	if c == nil {
		return
	}
	if hash == "" {
		var herr error
		if hash, herr = hashFile(ctx, cand.Path); herr != nil {
			return
		}
	}
	v := verdict{ID: cand.checked.String(), Hash: hash}
	var rerr *RejectError
	switch {
	case err == nil:
		v.OK, v.Kind, v.Version, v.PluginPath = true, string(cand.Kind), cand.Version.String(), cand.pluginPath
	case errors.As(err, &rerr):
		for name, sentinel := range cacheable {
			if errors.Is(err, sentinel) {
				v.Sentinel, v.Stage, v.Reason, v.Kind = name, string(rerr.Stage), rerr.Err.Error(), string(cand.Kind)
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !v.OK && v.Sentinel == "" {
		if _, ok := c.entries[cand.File]; ok {
			delete(c.entries, cand.File)
			c.dirty = true
		}
		return
	}
	c.entries[cand.File] = v
	c.dirty = true
}

// cachedErr is a rejection read back from the cache: its message, and the
// sentinel it wraps.
type cachedErr struct {
	sentinel error
	msg      string
}

func (e *cachedErr) Error() string { return e.msg }
func (e *cachedErr) Unwrap() error { return e.sentinel }

// apply gives candidate c the cached verdict v: nil for a pass (with its
// kind and plugin path), the rejection otherwise.
func (v verdict) apply(c *Candidate) error {
	if v.OK {
		c.Kind, c.pluginPath = contract.Kind(v.Kind), v.PluginPath
		return nil
	}
	c.Kind = contract.Kind(v.Kind)
	return &RejectError{Path: c.Path, Stage: Stage(v.Stage), Err: &cachedErr{sentinel: cacheable[v.Sentinel], msg: v.Reason}}
}

// RunnerBuild identifies the build of this executable for a Cache: its Go
// build ID, or, without one, its size and modification time.
func RunnerBuild() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if f, err := elf.Open(exe); err == nil {
		defer f.Close()
		if s := f.Section(".note.go.buildid"); s != nil {
			if data, err := s.Data(); err == nil && len(data) > 16 {
				return fmt.Sprintf("go:%x", xxhash.Sum64(data))
			}
		}
	}
	fi, err := os.Stat(exe)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("file:%d:%d", fi.Size(), fi.ModTime().UnixNano())
}
