package oplog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
)

// PauseSet is the set of workers whose delivery is paused, kept in a file
// so that a pause outlasts restarts. The zero PauseSet (no file) keeps it
// in memory only.
type PauseSet struct {
	path    string
	store   PauseStore // when set, the set is kept there, shared with other runners
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
	if p.store != nil {
		if err := p.store.SetPaused(context.Background(), worker, paused); err != nil {
			return err
		}
	} else if p.path != "" {
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

// PauseStore keeps a pause set that several runners share (a journal
// elsewhere that all of them use).
type PauseStore interface {
	// SetPaused records worker as paused or not, durably.
	SetPaused(ctx context.Context, worker string, paused bool) error
	// WatchPaused calls fn with each worker paused now, returns, and then
	// calls it with each change, from any runner, until ctx ends.
	WatchPaused(ctx context.Context, fn func(worker string, paused bool)) error
}

// SharedPauseSet returns the PauseSet kept in store: Set writes there,
// and the set follows the store's changes from every runner (a resume
// made by another runner wakes this one's deliveries), until ctx ends.
func SharedPauseSet(ctx context.Context, store PauseStore) (*PauseSet, error) {
	p := &PauseSet{store: store, set: map[string]bool{}}
	err := store.WatchPaused(ctx, func(worker string, paused bool) {
		p.mu.Lock()
		was := p.set[worker]
		next := maps.Clone(p.set)
		if paused {
			next[worker] = true
		} else {
			delete(next, worker)
		}
		p.set = next
		tell := slices.Clone(p.resumed)
		p.mu.Unlock()
		if was && !paused {
			for _, fn := range tell {
				fn(worker)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}
