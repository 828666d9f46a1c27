package journaltest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
)

// Memory is a Journal in memory: the reference implementation of the
// rules, for tests of what is built on a Journal (delivery, the appender).
// Nothing survives the process. The zero value is not used: NewMemory.
type Memory struct {
	mu       sync.Mutex
	journals map[string]*memJournal
	cursors  map[string]map[string]oplog.Cursor // processor → worker → cursor
	watchers map[int]func(string, oplog.Notice)
	nextID   int
}

type memJournal struct {
	first   uint64
	entries []contract.Entry
}

// NewMemory returns an empty Memory journal.
func NewMemory() *Memory {
	return &Memory{journals: map[string]*memJournal{}, cursors: map[string]map[string]oplog.Cursor{},
		watchers: map[int]func(string, oplog.Notice){}}
}

// Append follows the rules of oplog.Journal.Append.
func (m *Memory) Append(_ context.Context, worker string, start uint64, entries []contract.Entry) (int, error) {
	if err := oplog.CheckWorkerID(worker); err != nil {
		return 0, err
	}
	if len(entries) == 0 {
		return 0, nil
	}
	m.mu.Lock()
	j := m.journals[worker]
	var held uint64
	if j != nil {
		held = j.first
	}
	first, err := oplog.Begin(worker, j != nil, held, start, entries[0].Index)
	if err != nil {
		m.mu.Unlock()
		return 0, err
	}
	next := first
	if j != nil {
		next += uint64(len(j.entries))
	}
	overlap, err := oplog.Overlap(worker, first, next, entries)
	for i := 0; err == nil && i < overlap; i++ {
		err = oplog.Same(worker, j.entries[entries[i].Index-first], entries[i])
	}
	tail := slices.Clone(entries[overlap:])
	if err == nil {
		err = oplog.Stamp(worker, tail, time.Now().UTC())
	}
	if err != nil || len(tail) == 0 {
		m.mu.Unlock()
		return 0, err
	}
	if j == nil {
		j = &memJournal{first: first}
		m.journals[worker] = j
	}
	for _, e := range tail {
		e.WorkerID = worker
		e.Timestamp = e.Timestamp.UTC()
		e.Payload = append([]byte(nil), e.Payload...)
		j.entries = append(j.entries, e)
	}
	tell := m.watching()
	m.mu.Unlock()
	for _, fn := range tell {
		fn(worker, oplog.Changed)
	}
	return len(tail), nil
}

// watching returns the watchers; with m.mu held.
func (m *Memory) watching() []func(string, oplog.Notice) {
	out := make([]func(string, oplog.Notice), 0, len(m.watchers))
	for _, fn := range m.watchers {
		out = append(out, fn)
	}
	return out
}

// Head returns where worker's journal starts; At is the index.
func (m *Memory) Head(_ context.Context, worker string) (oplog.Position, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j := m.journals[worker]
	if j == nil {
		return oplog.Position{}, fmt.Errorf("%w: %s", oplog.ErrNoJournal, worker)
	}
	return oplog.Position{Next: j.first, At: int64(j.first)}, nil
}

// Read returns worker's entries from at.
func (m *Memory) Read(_ context.Context, worker string, at oplog.Position, limit, maxBytes int) ([]contract.Entry, oplog.Position, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j := m.journals[worker]
	if j == nil {
		return nil, at, fmt.Errorf("%w: %s", oplog.ErrNoJournal, worker)
	}
	if at.At != int64(at.Next) || at.Next < j.first {
		return nil, at, fmt.Errorf("journaltest: %s: a position this journal did not give: %+v", worker, at)
	}
	var out []contract.Entry
	size := 0
	for i := at.Next - j.first; i < uint64(len(j.entries)) && len(out) < limit; i++ {
		e := j.entries[i]
		if len(out) > 0 && size+len(e.Payload) > maxBytes {
			break
		}
		size += len(e.Payload)
		out = append(out, e)
	}
	next := at.Next + uint64(len(out))
	return out, oplog.Position{Next: next, At: int64(next)}, nil
}

// Workers lists the workers with a journal.
func (m *Memory) Workers(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.journals))
	for w := range m.journals {
		out = append(out, w)
	}
	return out, nil
}

// Watch tells notify of every append until ctx ends.
func (m *Memory) Watch(ctx context.Context, notify func(string, oplog.Notice)) error {
	m.mu.Lock()
	id := m.nextID
	m.nextID++
	m.watchers[id] = notify
	workers := make([]string, 0, len(m.journals))
	for w := range m.journals {
		workers = append(workers, w)
	}
	m.mu.Unlock()
	for _, w := range workers {
		notify(w, oplog.Listed)
	}
	<-ctx.Done()
	m.mu.Lock()
	delete(m.watchers, id)
	m.mu.Unlock()
	return nil
}

// Cursors returns the processor's cursors.
func (m *Memory) Cursors(name string) (oplog.CursorStore, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cursors[name] == nil {
		m.cursors[name] = map[string]oplog.Cursor{}
	}
	return memCursors{m: m, name: name}, nil
}

type memCursors struct {
	m    *Memory
	name string
}

func (c memCursors) Get(_ context.Context, worker string) (oplog.Cursor, error) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	if cur, ok := c.m.cursors[c.name][worker]; ok {
		return cur, nil
	}
	return oplog.Cursor{Worker: worker}, nil
}

func (c memCursors) Put(_ context.Context, old, next oplog.Cursor) error {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	cur, ok := c.m.cursors[c.name][next.Worker]
	if !ok {
		cur = oplog.Cursor{Worker: next.Worker}
	}
	if cur != old || old.Worker != next.Worker {
		return fmt.Errorf("%w: %s holds acked %d", oplog.ErrCursorMoved, next.Worker, cur.Acked)
	}
	c.m.cursors[c.name][next.Worker] = next
	return nil
}
