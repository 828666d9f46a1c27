package oplog_test

import (
	"errors"
	"os"
	"testing"

	"github.com/soplug/soplug/internal/oplog"
)

// FuzzReader reads an oplog whose records are arbitrary bytes after a
// valid header: it never panics, reads only contiguous indexes from 1, and
// stops with ErrTorn or ErrCorrupt or at a clean end.
func FuzzReader(f *testing.F) {
	seedDir := f.TempDir()
	w, err := oplog.OpenWriter(seedDir, "w")
	if err != nil {
		f.Fatal(err)
	}
	if err := w.Append(entries("w", 1, 3)...); err != nil {
		f.Fatal(err)
	}
	w.Close()
	valid, err := os.ReadFile(oplog.Path(seedDir, "w"))
	if err != nil {
		f.Fatal(err)
	}
	const hdr = 15
	f.Add(valid[hdr:])
	f.Add(valid[hdr : len(valid)-5])
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, records []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(oplog.Path(dir, "w"), append(append([]byte{}, valid[:hdr]...), records...), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := oplog.OpenReader(dir, "w")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		next := uint64(1)
		for {
			es, err := r.Read(5, 64)
			for _, e := range es {
				if e.Index != next {
					t.Fatalf("index %d, expected %d", e.Index, next)
				}
				next++
			}
			if err != nil {
				if !errors.Is(err, oplog.ErrTorn) && !errors.Is(err, oplog.ErrCorrupt) {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if len(es) == 0 {
				return
			}
		}
	})
}
