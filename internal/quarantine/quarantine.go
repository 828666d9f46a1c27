// Package quarantine remembers, in a state directory, which plugin versions
// each run of the daemon loaded and how that run ended, so that a version
// that keeps killing the daemon after it was loaded is skipped on the next
// start.
//
// The daemon calls Loading before it opens a version in its own process,
// Settle once it has served a while, and Clean when it stops cleanly. A run
// that loaded versions and never called Clean ended uncleanly (a crash, a
// kill). At the next Begin a version is blamed only where the evidence
// points at it: its code in the Go runtime's crash output (CrashFile: the
// failing goroutine of a panic or fault, or a goroutine in a call to it
// when a signal such as the watchdog's SIGABRT ended the run), or it was
// the only unproven version loaded and the run ended before it settled
// (during its load or first calls). A kill from outside (the OOM killer,
// a stop that timed out: systemd's account in StopFile) with no stack that
// names a plugin blames none, and so never a proven version. A version
// blamed Threshold times in a row is quarantined: Admit refuses it until its
// file changes (new content, so new identity) or Lift is called.
package quarantine

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/soplug/soplug/internal/atomicfile"
)

// DefaultThreshold is the number of unclean ends that quarantine a version
// when Store.Threshold is zero.
const DefaultThreshold = 2

// stateFile is the store's file of records in the state directory,
// written durably (synced) whenever a record changes.
const stateFile = "quarantine.json"

// runFile holds the current run's record (what it loaded, and where its
// calls are counted). It is replaced by rename without syncs, since it is
// evidence of a process's crash, which leaves the page cache whole; one cut
// short by a power loss or a kernel crash (no plugin's doing) is ignored.
const runFile = "run.json"

// ErrQuarantined is wrapped by Admit's error for a quarantined version.
var ErrQuarantined = errors.New("quarantine: quarantined")

// Record is what the store knows of one plugin version.
type Record struct {
	// Name and Version identify the plugin version.
	Name    string `json:"name"`
	Version string `json:"version"`
	// File is the identity of the file the record is about (device, inode,
	// size, modification time); a record about another file is void.
	File string `json:"file"`
	// Crashes counts the unclean ends of runs that loaded it, since its last
	// clean run.
	Crashes int `json:"crashes"`
	// Proven is set once a run that loaded it ended cleanly.
	Proven bool `json:"proven,omitempty"`
	// LastCrash is when the last unclean end was found.
	LastCrash time.Time `json:"last_crash,omitzero"`
	// Evidence is why the last unclean end was blamed on it: the stack
	// line that names it, or that it was the only newcomer.
	Evidence string `json:"evidence,omitempty"`
}

// Quarantined reports whether r has reached threshold crashes.
func (r Record) Quarantined(threshold int) bool { return r.Crashes >= threshold }

type run struct {
	PID     int                `json:"pid"`
	Started time.Time          `json:"started"`
	Loaded  []string           `json:"loaded"`          // keys of Records
	Files   map[string]fileRef `json:"files,omitempty"` // key → the file loaded
	Paths   map[string]string  `json:"paths,omitempty"` // key → plugin path, the package its stack frames name
	Slots   map[string]int     `json:"slots,omitempty"` // key → its count of calls in flight in MarksFile
	Settled bool               `json:"settled,omitempty"`
}

// fileRef is a version a run loaded, and the identity of its file.
type fileRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	File    string `json:"file"`
}

// id names the run: its PID and start.
func (r *run) id() string { return fmt.Sprintf("%d@%s", r.PID, r.Started.Format(time.RFC3339Nano)) }

// state is the store's state: the records and the last blamed run, kept
// in stateFile, and the current run's record, kept in runFile (in
// stateFile, under "run", before this run's record had a file of its own:
// read, and moved out at the next write).
type state struct {
	Run      *run               `json:"run,omitempty"`
	Versions map[string]*Record `json:"versions"`
	// LastBlamed is the run (run.id) whose unclean end was last counted:
	// a runFile whose removal a power loss undid is not counted twice.
	LastBlamed string `json:"last_blamed,omitempty"`
}

// recordFor returns the record about the file r loaded as key k: nil when
// there is none, or the record is about another file.
func (st *state) recordFor(r *run, k string) *Record {
	rec := st.Versions[k]
	if ref, ok := r.Files[k]; ok && rec != nil && rec.File != ref.File {
		return nil
	}
	return rec
}

// ensure returns the record about the file r loaded as key k, made anew
// (replacing one about another file) when there is none; nil for a run
// recorded without its files that has no record of k.
func (st *state) ensure(r *run, k string) *Record {
	if rec := st.recordFor(r, k); rec != nil {
		return rec
	}
	ref, ok := r.Files[k]
	if !ok {
		return nil
	}
	return st.record(ref.Name, ref.Version, ref.File)
}

// record returns the version's record about the file whose identity is
// id, made anew (replacing one about another file) when there is none.
func (st *state) record(name, version, id string) *Record {
	k := key(name, version)
	if r := st.Versions[k]; r != nil && r.File == id {
		return r
	}
	r := &Record{Name: name, Version: version, File: id}
	st.Versions[k] = r
	return r
}

// Store is the quarantine state of one state directory. A nil *Store, or one
// with an empty Dir, keeps no state: Admit admits everything and the other
// methods do nothing, so the daemon can always call them.
type Store struct {
	// Dir is the state directory.
	Dir string
	// Threshold is how many unclean ends quarantine a version; zero means
	// DefaultThreshold.
	Threshold int
	// ReadOnly keeps every change in memory and writes nothing: `runner
	// plugins check` calls Begin and Admit on it to predict the next start
	// exactly, without being that start.
	ReadOnly bool

	mem        *state // ReadOnly's state, once read
	unreadable string // why the run's record last read was ignored

	marks *marks         // this run's MarksFile, mapped by Begin
	slots map[string]int // this run's slots, as Loading gave them
}

func (s *Store) enabled() bool { return s != nil && s.Dir != "" }

func (s *Store) threshold() int {
	if s.Threshold > 0 {
		return s.Threshold
	}
	return DefaultThreshold
}

// Quarantines reports whether the store quarantines r: whether r has
// reached the store's threshold (Threshold, or DefaultThreshold for 0).
func (s *Store) Quarantines(r Record) bool { return r.Quarantined(s.threshold()) }

func key(name, version string) string { return name + "@" + version }

// FileID returns the identity of the file at path: device, inode, size and
// modification time.
func FileID(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Sprintf("%d:%d", fi.Size(), fi.ModTime().UnixNano()), nil
	}
	return fmt.Sprintf("%d:%d:%d:%d", st.Dev, st.Ino, fi.Size(), fi.ModTime().UnixNano()), nil
}

// End is what Begin found of the previous run.
type End struct {
	// Unclean is set when the previous run loaded versions and did not end
	// cleanly.
	Unclean bool
	// Crash is set when it left crash output (CrashFile).
	Crash bool
	// Stop is systemd's account of its end, when `runner stop-post`
	// recorded one.
	Stop *Stop
	// Blamed are the records of the versions the evidence points at, their
	// Evidence saying why.
	Blamed []Record
	// Unreadable says why the previous run's record (runFile) was
	// ignored: cut short, which only a power loss or a kernel crash does
	// to it. Empty when it was read or absent.
	Unreadable string
}

// Begin starts a run: it blames, by the evidence, the versions loaded by a
// previous run that did not end cleanly, and clears that run's record
// (Loading starts this run's).
func (s *Store) Begin() (End, error) {
	var end End
	if !s.enabled() {
		return end, nil
	}
	ev, err := readEvidence(s.Dir)
	if err != nil {
		return end, err
	}
	end.Crash, end.Stop = strings.TrimSpace(ev.crash) != "", ev.stop
	err = s.update(func(st *state) error {
		if prev := st.Run; prev != nil && len(prev.Loaded) > 0 && prev.id() != st.LastBlamed {
			end.Unclean = true
			var err error
			if ev.inflight, err = readMarks(s.Dir, prev.Slots); err != nil {
				return err
			}
			why := blame(prev, st, ev)
			for _, k := range slices.Sorted(maps.Keys(why)) {
				r := st.ensure(prev, k)
				r.Crashes++
				r.LastCrash = time.Now().UTC()
				r.Evidence = why[k]
				end.Blamed = append(end.Blamed, *r)
			}
			if len(why) > 0 {
				st.LastBlamed = prev.id()
			}
		}
		// This run's record begins with its first Loading: until a version
		// is loaded there is nothing to blame.
		st.Run = nil
		return nil
	})
	end.Unreadable = s.unreadable
	if err == nil && !s.ReadOnly && ev.stop != nil {
		if rerr := os.Remove(filepath.Join(s.Dir, StopFile)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = fmt.Errorf("quarantine: %w", rerr)
		}
	}
	if err == nil && !s.ReadOnly {
		s.marks, err = openMarks(s.Dir)
	}
	return end, err
}

// Mark returns the count of calls in flight into the version this run
// loaded (Loading) in process: the daemon's services count their calls into
// it, so that the next start knows what a kill interrupted. Nil, which
// counts nothing, for a version not loaded in process or without a store.
func (s *Store) Mark(name, version string) *Mark {
	if !s.enabled() {
		return nil
	}
	slot, ok := s.slots[key(name, version)]
	if !ok {
		return nil
	}
	return s.marks.mark(slot)
}

// blame returns the keys of the versions prev loaded that the evidence
// points at, each with why.
func blame(prev *run, st *state, ev evidence) map[string]string {
	paths := map[string]string{}
	proven := map[string]bool{}
	for _, k := range prev.Loaded {
		r := st.recordFor(prev, k)
		if _, ok := prev.Files[k]; r == nil && !ok {
			continue // a run recorded without its files, and no record of this one
		}
		paths[k] = prev.Paths[k]
		proven[k] = r != nil && r.Proven
	}
	out := map[string]string{}
	for k, line := range inStacks(ev.crash, paths) {
		out[k] = "its code is in the crash stack: " + line
	}
	if len(out) > 0 {
		return out
	}
	var unproven []string
	for k := range paths {
		if !proven[k] {
			unproven = append(unproven, k)
		}
	}
	// A kill leaves no stack: the calls it interrupted are the evidence,
	// against versions not yet proven only (an OOM kill or a stop timeout
	// in a proven version's call blames nothing).
	for _, k := range unproven {
		if n := ev.inflight[k]; n > 0 {
			why := fmt.Sprintf("a call into it was in flight when the run ended (%d in flight); no stack named a plugin", n)
			if ev.stop != nil {
				why += "; systemd: " + ev.stop.String()
			}
			out[k] = why
		}
	}
	if len(out) > 0 {
		return out
	}
	if len(unproven) == 1 && !prev.Settled {
		why := "the only unproven version loaded, and the run ended before it settled (during its load or first calls); no stack named a plugin"
		if ev.stop != nil {
			why += "; systemd: " + ev.stop.String()
		}
		out[unproven[0]] = why
	}
	return out
}

// Admit returns an error wrapping ErrQuarantined when the version in the
// file at path is quarantined. It writes nothing.
func (s *Store) Admit(name, version, path string) error {
	if !s.enabled() {
		return nil
	}
	id, err := FileID(path)
	if err != nil {
		return nil // the loader reports an unreadable file itself
	}
	var quarantined *Record
	err = s.update(func(st *state) error {
		r := st.Versions[key(name, version)]
		// A record about another file (the version was replaced) is void;
		// it stays until the version's next record replaces it, so that
		// admitting a replaced version writes nothing on a start's path.
		if r != nil && r.File == id && r.Quarantined(s.threshold()) {
			quarantined = r
		}
		return nil
	})
	if err != nil {
		return err
	}
	if quarantined != nil {
		why := ""
		if quarantined.Evidence != "" {
			why = ": " + quarantined.Evidence
		}
		return fmt.Errorf("%w after %d crashes of the daemon that loaded it (the last at %s%s); replace the file or run: runner plugins unquarantine %s %s",
			ErrQuarantined, quarantined.Crashes, quarantined.LastCrash.Format(time.RFC3339), why, name, version)
	}
	return nil
}

// Loading records that this run is about to open the version in the file
// at path in its own process; pluginPath is its plugin path (the package
// its functions are named by in a stack), "" when unknown. The record is
// the run's (runFile), replaced without syncs: a crash of this process
// leaves it in the page cache for the next start, and a power loss is no
// version's doing. No record of the version changes until the run ends.
func (s *Store) Loading(name, version, path, pluginPath string) error {
	return s.updateVersion(name, version, path, func(st *state, k, id string) {
		if st.Run == nil {
			st.Run = &run{PID: os.Getpid(), Started: time.Now().UTC()}
		}
		if !slices.Contains(st.Run.Loaded, k) {
			st.Run.Loaded = append(st.Run.Loaded, k)
		}
		if st.Run.Files == nil {
			st.Run.Files = map[string]fileRef{}
		}
		st.Run.Files[k] = fileRef{Name: name, Version: version, File: id}
		if pluginPath != "" {
			if st.Run.Paths == nil {
				st.Run.Paths = map[string]string{}
			}
			st.Run.Paths[k] = pluginPath
		}
		if st.Run.Slots == nil {
			st.Run.Slots = map[string]int{}
		}
		if _, ok := st.Run.Slots[k]; !ok && len(st.Run.Slots) < maxSlots {
			st.Run.Slots[k] = len(st.Run.Slots)
		}
		if slot, ok := st.Run.Slots[k]; ok {
			if s.slots == nil {
				s.slots = map[string]int{}
			}
			s.slots[k] = slot
		}
	})
}

// Settle records, in the run's record, that this run has served a while:
// an unclean end after it is no longer blamed on a newcomer for being the
// only one (only a stack that names a version blames it then).
func (s *Store) Settle() error {
	if !s.enabled() {
		return nil
	}
	return s.update(func(st *state) error {
		if st.Run != nil {
			st.Run.Settled = true
		}
		return nil
	})
}

// Quarantine quarantines the version in the file at path at once, durably:
// the daemon calls it for an out-of-process plugin whose process kept dying
// while this run went on. The run's clean end does not lift it.
func (s *Store) Quarantine(name, version, path string) error {
	return s.updateVersion(name, version, path, func(st *state, k, id string) {
		r := st.record(name, version, id)
		r.Crashes = max(r.Crashes+1, s.threshold())
		r.LastCrash = time.Now().UTC()
		if st.Run != nil {
			st.Run.Loaded = slices.DeleteFunc(st.Run.Loaded, func(l string) bool { return l == k })
		}
	})
}

// updateVersion calls fn with the state, the version's key and the
// identity of its file at path, and saves what fn changed.
func (s *Store) updateVersion(name, version, path string, fn func(st *state, k, id string)) error {
	if !s.enabled() {
		return nil
	}
	id, err := FileID(path)
	if err != nil {
		return err
	}
	return s.update(func(st *state) error {
		fn(st, key(name, version), id)
		return nil
	})
}

// Clean records that this run is ending cleanly: every version it loaded is
// proven and its crash count reset (durably, when that changes a record),
// and the run's record is removed.
func (s *Store) Clean() error {
	if !s.enabled() {
		return nil
	}
	return s.update(func(st *state) error {
		if st.Run != nil {
			for _, k := range st.Run.Loaded {
				if r := st.ensure(st.Run, k); r != nil {
					r.Proven, r.Crashes = true, 0
				}
			}
		}
		st.Run = nil
		return nil
	})
}

// Lift lifts the version's quarantine: its crash count is reset, and what
// it has proven (a clean run) is kept, so that a lifted version that was
// proven is not blamed first at the next unrelated crash. It reports
// whether there was a record.
func (s *Store) Lift(name, version string) (bool, error) {
	if !s.enabled() {
		return false, nil
	}
	var found bool
	err := s.update(func(st *state) error {
		r := st.Versions[key(name, version)]
		if found = r != nil; found {
			r.Crashes, r.Evidence = 0, ""
		}
		return nil
	})
	return found, err
}

// Records returns every record, ordered by name and version.
func (s *Store) Records() ([]Record, error) {
	if !s.enabled() {
		return nil, nil
	}
	var out []Record
	err := s.update(func(st *state) error {
		for _, r := range st.Versions {
			out = append(out, *r)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Record) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})
	return out, err
}

// update reads the state under an exclusive lock, applies fn and writes
// back what changed: the records durably (temporary file, fsync, rename,
// fsync of the folder), then the run's record by rename without syncs, or
// its removal.
func (s *Store) update(fn func(*state) error) error {
	if s.ReadOnly {
		return s.updateInMemory(fn)
	}
	if err := os.MkdirAll(s.Dir, 0o750); err != nil {
		return fmt.Errorf("quarantine: state directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(s.Dir, stateFile+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("quarantine: locking %s: %w", lock.Name(), err)
	}
	st, on, err := s.read()
	if err != nil {
		return err
	}
	before, err := encode(st)
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		return err
	}
	after, err := encode(st)
	if err != nil {
		return err
	}
	if after.records != before.records || on.legacyRun {
		if err := atomicfile.Write(filepath.Join(s.Dir, stateFile), []byte(after.records), 0o600); err != nil {
			return fmt.Errorf("quarantine: %w", err)
		}
	}
	runPath := filepath.Join(s.Dir, runFile)
	switch {
	case st.Run == nil && on.runFile:
		if err := os.Remove(runPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("quarantine: %w", err)
		}
	case st.Run != nil && (after.run != before.run || (on.legacyRun && !on.runFile)):
		if err := atomicfile.Replace(runPath, []byte(after.run), 0o600); err != nil {
			return fmt.Errorf("quarantine: %w", err)
		}
	}
	return nil
}

// onDisk is what read found besides the state.
type onDisk struct {
	runFile   bool // runFile exists (whether or not it was read)
	legacyRun bool // stateFile holds a run record, which belongs in runFile now
}

// encoded is a state as its two files hold it.
type encoded struct{ records, run string }

// encode renders st as its two files hold it: the records, and the run's
// record ("" for none).
func encode(st *state) (encoded, error) {
	recs := *st
	recs.Run = nil
	r, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return encoded{}, err
	}
	var run []byte
	if st.Run != nil {
		if run, err = json.MarshalIndent(st.Run, "", "  "); err != nil {
			return encoded{}, err
		}
	}
	return encoded{string(r), string(run)}, nil
}

// read reads the state directory's files: the records (absent is none;
// one that does not parse is an error, as they are written durably) and
// the run's record (absent is none; one that does not parse is ignored,
// and s.unreadable says why).
func (s *Store) read() (*state, onDisk, error) {
	var on onDisk
	s.unreadable = ""
	st := &state{Versions: map[string]*Record{}}
	path := filepath.Join(s.Dir, stateFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, on, fmt.Errorf("quarantine: %w", err)
	default:
		if err := json.Unmarshal(data, st); err != nil {
			return nil, on, fmt.Errorf("quarantine: %s is not valid JSON (move it away to start afresh): %w", path, err)
		}
		if st.Versions == nil {
			st.Versions = map[string]*Record{}
		}
	}
	on.legacyRun = st.Run != nil
	path = filepath.Join(s.Dir, runFile)
	data, err = os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, on, fmt.Errorf("quarantine: %w", err)
	default:
		on.runFile = true
		var r run
		if err := json.Unmarshal(data, &r); err != nil {
			s.unreadable = fmt.Sprintf("%s is not valid JSON (%v): ignored, as only a power loss or a kernel crash cuts it short", path, err)
			st.Run = nil
		} else {
			st.Run = &r
		}
	}
	return st, on, nil
}

// updateInMemory is update for a ReadOnly store: the state is read once
// (its writers replace each file by rename, so a read sees whole ones) and
// kept in memory.
func (s *Store) updateInMemory(fn func(*state) error) error {
	if s.mem == nil {
		st, _, err := s.read()
		if err != nil {
			return err
		}
		s.mem = st
	}
	return fn(s.mem)
}
