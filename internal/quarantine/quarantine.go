// Package quarantine remembers, in a state directory, which plugin versions
// each run of the daemon loaded and how that run ended, so that a version
// that keeps killing the daemon after it was loaded is skipped on the next
// start.
//
// The daemon calls Loading before it opens a version in its own process and
// Clean when it stops cleanly. A run that loaded versions and never called
// Clean ended uncleanly (a crash, a kill): at the next Begin, the versions it
// loaded are blamed. Versions already proven by a clean run are blamed only
// when no unproven version was loaded with them, so an old plugin is not
// quarantined for a newcomer's crash. A version blamed Threshold times in a
// row is quarantined: Admit refuses it until its file changes (new content,
// so new identity) or Lift is called.
package quarantine

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/soplug/soplug/internal/atomicfile"
)

// DefaultThreshold is the number of unclean ends that quarantine a version
// when Store.Threshold is zero.
const DefaultThreshold = 2

// stateFile is the store's file in the state directory.
const stateFile = "quarantine.json"

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
}

// Quarantined reports whether r has reached threshold crashes.
func (r Record) Quarantined(threshold int) bool { return r.Crashes >= threshold }

type run struct {
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Loaded  []string  `json:"loaded"` // keys of Records
}

type state struct {
	Run      *run               `json:"run,omitempty"`
	Versions map[string]*Record `json:"versions"`
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

// Begin starts a run: it blames the versions loaded by a previous run that
// did not end cleanly, and records this run as started. It returns the
// records it blamed.
func (s *Store) Begin() (blamed []Record, err error) {
	if !s.enabled() {
		return nil, nil
	}
	err = s.update(func(st *state) error {
		if prev := st.Run; prev != nil && len(prev.Loaded) > 0 {
			suspects := slices.DeleteFunc(slices.Clone(prev.Loaded), func(k string) bool {
				r := st.Versions[k]
				return r == nil || r.Proven
			})
			if len(suspects) == 0 {
				suspects = prev.Loaded
			}
			for _, k := range suspects {
				if r := st.Versions[k]; r != nil {
					r.Crashes++
					r.LastCrash = time.Now().UTC()
					blamed = append(blamed, *r)
				}
			}
		}
		st.Run = &run{PID: os.Getpid(), Started: time.Now().UTC()}
		return nil
	})
	return blamed, err
}

// Admit returns an error wrapping ErrQuarantined when the version in the
// file at path is quarantined. A record about another file (the version was
// replaced) is dropped.
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
		switch {
		case r == nil:
		case r.File != id:
			delete(st.Versions, key(name, version))
		case r.Quarantined(s.threshold()):
			quarantined = r
		}
		return nil
	})
	if err != nil {
		return err
	}
	if quarantined != nil {
		return fmt.Errorf("%w after %d crashes of the daemon that loaded it (the last at %s); replace the file or run: runner plugins unquarantine %s %s",
			ErrQuarantined, quarantined.Crashes, quarantined.LastCrash.Format(time.RFC3339), name, version)
	}
	return nil
}

// Loading records, durably, that this run is about to open the version in
// the file at path in its own process.
func (s *Store) Loading(name, version, path string) error {
	return s.updateRecord(name, version, path, func(st *state, k string, _ *Record) {
		if st.Run == nil {
			st.Run = &run{PID: os.Getpid(), Started: time.Now().UTC()}
		}
		if !slices.Contains(st.Run.Loaded, k) {
			st.Run.Loaded = append(st.Run.Loaded, k)
		}
	})
}

// Quarantine quarantines the version in the file at path at once, durably:
// the daemon calls it for an out-of-process plugin whose process kept dying
// while this run went on. The run's clean end does not lift it.
func (s *Store) Quarantine(name, version, path string) error {
	return s.updateRecord(name, version, path, func(st *state, k string, r *Record) {
		r.Crashes = max(r.Crashes+1, s.threshold())
		r.LastCrash = time.Now().UTC()
		if st.Run != nil {
			st.Run.Loaded = slices.DeleteFunc(st.Run.Loaded, func(l string) bool { return l == k })
		}
	})
}

// updateRecord calls fn with the state and the key and record of the
// version in the file at path (a new record when there is none or it is
// about another file), and saves the state durably.
func (s *Store) updateRecord(name, version, path string, fn func(st *state, k string, r *Record)) error {
	if !s.enabled() {
		return nil
	}
	id, err := FileID(path)
	if err != nil {
		return err
	}
	return s.update(func(st *state) error {
		k := key(name, version)
		r := st.Versions[k]
		if r == nil || r.File != id {
			r = &Record{Name: name, Version: version, File: id}
			st.Versions[k] = r
		}
		fn(st, k, r)
		return nil
	})
}

// Clean records that this run is ending cleanly: every version it loaded is
// proven and its crash count reset.
func (s *Store) Clean() error {
	if !s.enabled() {
		return nil
	}
	return s.update(func(st *state) error {
		if st.Run != nil {
			for _, k := range st.Run.Loaded {
				if r := st.Versions[k]; r != nil {
					r.Proven, r.Crashes = true, 0
				}
			}
		}
		st.Run = nil
		return nil
	})
}

// Lift removes the version's record, and so its quarantine. It reports
// whether there was one.
func (s *Store) Lift(name, version string) (bool, error) {
	if !s.enabled() {
		return false, nil
	}
	var found bool
	err := s.update(func(st *state) error {
		_, found = st.Versions[key(name, version)]
		delete(st.Versions, key(name, version))
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

// update reads the state under an exclusive lock, applies fn and writes the
// state back durably: temporary file, fsync, rename, fsync of the folder.
func (s *Store) update(fn func(*state) error) error {
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
	path := filepath.Join(s.Dir, stateFile)
	st := state{Versions: map[string]*Record{}}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("quarantine: %w", err)
	default:
		if err := json.Unmarshal(data, &st); err != nil {
			return fmt.Errorf("quarantine: %s is not valid JSON (move it away to start afresh): %w", path, err)
		}
		if st.Versions == nil {
			st.Versions = map[string]*Record{}
		}
	}
	before := string(data)
	if err := fn(&st); err != nil {
		return err
	}
	out, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if string(out) == before {
		return nil
	}
	if err := atomicfile.Write(path, out, 0o600); err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	return nil
}
