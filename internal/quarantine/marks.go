package quarantine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// MarksFile is the file of the calls in flight, in the state directory:
// one 64-bit count per version loaded in process (its slot, in the run's
// record), shared-mapped, so that what a kill that leaves no stack (the
// OOM killer's, systemd's after a stop timeout, kill -9) interrupted is
// still there for the next start to read.
const MarksFile = "inflight"

// maxSlots bounds the versions a run marks calls for.
const maxSlots = 512

// Mark counts the calls in flight into one plugin version: Enter before a
// call, Exit after it, two atomic additions to shared memory. A nil *Mark
// counts nothing, so callers can always call it.
type Mark struct{ n *int64 }

// Enter counts a call in.
func (m *Mark) Enter() {
	if m != nil {
		atomic.AddInt64(m.n, 1)
	}
}

// Exit counts a call out.
func (m *Mark) Exit() {
	if m != nil {
		atomic.AddInt64(m.n, -1)
	}
}

// MarkFunc returns the Mark of a plugin version (Store.Mark), nil for one
// whose calls are not counted.
type MarkFunc func(name, version string) *Mark

// For returns f's Mark of the version; a nil MarkFunc counts nothing.
func (f MarkFunc) For(name, version string) *Mark {
	if f == nil {
		return nil
	}
	return f(name, version)
}

// marks is the mapped MarksFile of this run.
type marks struct{ data []byte }

// openMarks creates dir's MarksFile afresh (all counts 0) and maps it.
func openMarks(dir string) (*marks, error) {
	path := filepath.Join(dir, MarksFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(maxSlots * 8); err != nil {
		return nil, fmt.Errorf("quarantine: %s: %w", path, err)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, maxSlots*8, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("quarantine: mapping %s: %w", path, err)
	}
	return &marks{data: data}, nil
}

// mark is slot's Mark.
func (m *marks) mark(slot int) *Mark {
	if m == nil || slot < 0 || slot >= maxSlots {
		return nil
	}
	return &Mark{n: (*int64)(unsafe.Pointer(&m.data[slot*8]))}
}

// readMarks reads the counts a previous run left in dir's MarksFile, by
// the keys of its slots; a missing file is no count.
func readMarks(dir string, slots map[string]int) (map[string]int64, error) {
	data, err := os.ReadFile(filepath.Join(dir, MarksFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	out := map[string]int64{}
	for k, slot := range slots {
		if slot >= 0 && (slot+1)*8 <= len(data) {
			if n := int64(binary.NativeEndian.Uint64(data[slot*8:])); n > 0 {
				out[k] = n
			}
		}
	}
	return out, nil
}
