package oplog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
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
	// Offset is the journal's position (Position.At) of the entry after
	// Acked: in a FileJournal, where its record starts in the oplog file.
	// 0 means none recorded: delivery starts at the journal's head.
	Offset int64 `json:"offset"`
	// InFlight is the last index that may have been passed to Process
	// without its acknowledgement being recorded (at least Acked). After
	// a crash the entries Acked+1 to InFlight are delivered again with
	// Batch.Redelivery set.
	InFlight uint64 `json:"in_flight"`
}

// FileCursors keeps one processor's cursors, a file per worker
// (<worker>.cursor) in a folder: a CursorStore. Its compare-and-set holds
// within one process; the daemon's lock on its state directory keeps
// other processes out. At most a bounded number of loads and saves run at
// once, so that however many workers commit together the store holds that
// many files open (two each).
type FileCursors struct {
	dir   string
	sem   chan struct{}
	seed  maphash.Seed
	locks [64]sync.Mutex // a worker's Put reads, compares and writes under one
}

// Exclusive reports that no other process delivers the workers whose
// cursors a FileCursors keeps (the daemon's lock on its folders keeps
// other runners out), so that once delivery has read a worker to the end
// after a crash, nothing appended later can have been handed to a
// processor: see Config.CommitEvery.
func (*FileCursors) Exclusive() bool { return true }

// NewFileCursors returns the cursor store in dir, creating it, running at
// most parallel loads and saves at once (at least one).
func NewFileCursors(dir string, parallel int) (*FileCursors, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("oplog: cursors: %w", err)
	}
	return &FileCursors{dir: dir, sem: make(chan struct{}, max(parallel, 1)), seed: maphash.MakeSeed()}, nil
}

func (s *FileCursors) path(worker string) string { return filepath.Join(s.dir, worker+".cursor") }

// Get returns worker's cursor; a worker with none starts at its journal's
// head. A damaged cursor file wraps ErrCorrupt.
func (s *FileCursors) Get(_ context.Context, worker string) (Cursor, error) {
	if err := CheckWorkerID(worker); err != nil {
		return Cursor{}, err
	}
	s.sem <- struct{}{}
	defer func() { <-s.sem }()
	return s.load(worker)
}

func (s *FileCursors) load(worker string) (Cursor, error) {
	data, err := os.ReadFile(s.path(worker))
	if errors.Is(err, os.ErrNotExist) {
		return Cursor{Worker: worker}, nil
	}
	if err != nil {
		return Cursor{}, fmt.Errorf("oplog: cursor: %w", err)
	}
	var c Cursor
	if err := json.Unmarshal(data, &c); err != nil || c.Worker != worker || c.InFlight < c.Acked || (c.Offset == 0 && c.Acked > 0) {
		if err == nil {
			err = errors.New("its fields disagree")
		}
		return Cursor{}, fmt.Errorf("%w: cursor file %s is damaged (%v); delivery to this worker waits until it is repaired or removed (removing it delivers the worker's oplog again from its start)",
			ErrCorrupt, s.path(worker), err)
	}
	return c, nil
}

// Put writes c durably in place of old: a temporary file, synced, renamed
// over the old one, and the folder synced. A crash leaves the old cursor
// or the new. ErrCursorMoved when the file does not hold old.
func (s *FileCursors) Put(_ context.Context, old, c Cursor) error {
	if err := CheckWorkerID(c.Worker); err != nil {
		return err
	}
	if old.Worker != c.Worker {
		return fmt.Errorf("oplog: a cursor of %s put in place of one of %s", c.Worker, old.Worker)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	mu := &s.locks[maphash.String(s.seed, c.Worker)%uint64(len(s.locks))]
	mu.Lock()
	defer mu.Unlock()
	s.sem <- struct{}{}
	defer func() { <-s.sem }()
	cur, err := s.load(c.Worker)
	if err != nil {
		return err
	}
	if cur != old {
		return fmt.Errorf("%w: %s holds acked %d, in flight %d", ErrCursorMoved, s.path(c.Worker), cur.Acked, cur.InFlight)
	}
	return writeFileAtomic(s.path(c.Worker), data)
}

// writeFileAtomic replaces path, in dir, with data durably.
func writeFileAtomic(path string, data []byte) error {
	if err := atomicfile.Write(path, data, 0o640); err != nil {
		return fmt.Errorf("oplog: %w", err)
	}
	return nil
}
