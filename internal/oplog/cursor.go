package oplog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/soplug/soplug/internal/atomicfile"
)

// Cursor is how far one processor got in one worker's oplog.
type Cursor struct {
	// Worker is the worker's ID.
	Worker string `json:"worker"`
	// Acked is the last index the processor acknowledged: every entry up
	// to it was processed, and none is delivered again.
	Acked uint64 `json:"acked"`
	// Offset is where the record after Acked starts in the oplog file; 0
	// means at the first record.
	Offset int64 `json:"offset"`
	// InFlight is the last index that may have been passed to Process
	// without its acknowledgement being recorded (at least Acked). After
	// a crash the entries Acked+1 to InFlight are delivered again with
	// Batch.Redelivery set.
	InFlight uint64 `json:"in_flight"`
}

// cursorStore keeps one processor's cursors, a file per worker, in dir.
// At most cap(sem) loads and saves run at once: however many workers
// commit together, the store holds that many files open (two each).
type cursorStore struct {
	dir string
	sem chan struct{}
}

func newCursorStore(dir string, parallel int) (*cursorStore, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("oplog: cursors: %w", err)
	}
	return &cursorStore{dir: dir, sem: make(chan struct{}, max(parallel, 1))}, nil
}

func (s *cursorStore) path(worker string) string { return filepath.Join(s.dir, worker+".cursor") }

// load returns worker's cursor; a worker with none starts at index 1.
func (s *cursorStore) load(worker string) (Cursor, error) {
	s.sem <- struct{}{}
	data, err := os.ReadFile(s.path(worker))
	<-s.sem
	if errors.Is(err, os.ErrNotExist) {
		return Cursor{Worker: worker}, nil
	}
	if err != nil {
		return Cursor{}, fmt.Errorf("oplog: cursor: %w", err)
	}
	var c Cursor
	if err := json.Unmarshal(data, &c); err != nil || c.Worker != worker || c.InFlight < c.Acked {
		return Cursor{}, fmt.Errorf("%w: cursor file %s is damaged (%v); delivery to this worker waits until it is repaired or removed (removing it delivers the worker's oplog again from index 1)",
			ErrCorrupt, s.path(worker), err)
	}
	return c, nil
}

// save writes c durably: a temporary file, synced, renamed over the old
// one, and the folder synced. A crash leaves the old cursor or the new.
func (s *cursorStore) save(c Cursor) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	s.sem <- struct{}{}
	defer func() { <-s.sem }()
	return writeFileAtomic(s.path(c.Worker), data)
}

// writeFileAtomic replaces path, in dir, with data durably.
func writeFileAtomic(path string, data []byte) error {
	if err := atomicfile.Write(path, data, 0o640); err != nil {
		return fmt.Errorf("oplog: %w", err)
	}
	return nil
}

// PauseSet is the set of workers whose delivery is paused, kept in a file
// so that a pause outlasts restarts. The zero PauseSet (no file) keeps it
// in memory only.
type PauseSet struct {
	path    string
	mu      sync.Mutex
	set     map[string]bool
	resumed []func(worker string) // told of each resume (Deliverers)
}

// OpenPauseSet reads the pause set kept at path (missing: none paused).
func OpenPauseSet(path string) (*PauseSet, error) {
	p := &PauseSet{path: path, set: map[string]bool{}}
	if path == "" {
		return p, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("oplog: %w", err)
	}
	var workers []string
	if err := json.Unmarshal(data, &workers); err != nil {
		return nil, fmt.Errorf("%w: pause file %s: %v", ErrCorrupt, path, err)
	}
	for _, w := range workers {
		p.set[w] = true
	}
	return p, nil
}

// Paused reports whether worker is paused.
func (p *PauseSet) Paused(worker string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.set[worker]
}

// onResume has fn told of every worker resumed from now on.
func (p *PauseSet) onResume(fn func(worker string)) {
	p.mu.Lock()
	p.resumed = append(p.resumed, fn)
	p.mu.Unlock()
}

// Set pauses or resumes worker, durably; a resume wakes its deliveries.
func (p *PauseSet) Set(worker string, paused bool) error {
	if err := CheckWorkerID(worker); err != nil {
		return err
	}
	p.mu.Lock()
	if p.set[worker] == paused {
		p.mu.Unlock()
		return nil
	}
	if err := p.change(worker, paused); err != nil {
		p.mu.Unlock()
		return err
	}
	tell := slices.Clone(p.resumed)
	p.mu.Unlock()
	if !paused {
		for _, fn := range tell {
			fn(worker)
		}
	}
	return nil
}

// change writes the set with worker paused or not; with p.mu held.
func (p *PauseSet) change(worker string, paused bool) error {
	next := map[string]bool{}
	for w := range p.set {
		next[w] = true
	}
	if paused {
		next[worker] = true
	} else {
		delete(next, worker)
	}
	if p.path != "" {
		var list []string
		for w := range next {
			list = append(list, w)
		}
		slices.Sort(list)
		data, _ := json.Marshal(list)
		if err := writeFileAtomic(p.path, data); err != nil {
			return err
		}
	}
	p.set = next
	return nil
}

// List returns the paused workers, sorted.
func (p *PauseSet) List() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for w := range p.set {
		out = append(out, w)
	}
	slices.Sort(out)
	return out
}
