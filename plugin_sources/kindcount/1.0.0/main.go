// Command kindcount 1.0.0 is an OplogProcessor plugin: it counts each
// worker's oplog entries by kind and keeps the counts in a JSON file per
// worker, <dir>/<worker>.json, with the last index it counted. Entries at or
// below that index are skipped, so a redelivered batch is not counted twice.
//
// Config keys: "dir", the folder for the count files (default: the
// system's temporary folder joined with "kindcount").
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/soplug/soplug/contract"
)

const version = "1.0.0"

// counts is what one worker's file holds.
type counts struct {
	LastIndex uint64         `json:"last_index"`
	ByKind    map[string]int `json:"by_kind"`
}

type counter struct {
	mu  sync.Mutex
	dir string
}

func (*counter) Version() string { return version }

func (*counter) IsAcceptable() bool { return true }

func (c *counter) Init(_ context.Context, cfg contract.Config) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dir = cfg["dir"]
	if c.dir == "" {
		c.dir = filepath.Join(os.TempDir(), "kindcount")
	}
	return os.MkdirAll(c.dir, 0o755)
}

func (c *counter) Process(_ context.Context, b contract.Batch) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir == "" {
		return fmt.Errorf("kindcount: Process before Init")
	}
	path := filepath.Join(c.dir, filepath.Base(b.WorkerID)+".json")
	st := counts{ByKind: map[string]int{}}
	if data, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(data, &st); err != nil {
			return fmt.Errorf("kindcount: %s: %w", path, err)
		}
	} else if !os.IsNotExist(err) {
		return err
	}
	for _, e := range b.Entries {
		if e.Index <= st.LastIndex {
			continue // already counted: a redelivery
		}
		st.ByKind[e.Kind]++
		st.LastIndex = e.Index
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (*counter) Close(context.Context) error { return nil }

// OplogProcessor is the accessor soplug looks up.
func OplogProcessor() contract.OplogProcessor { return &counter{} }
