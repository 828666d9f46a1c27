package oplog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// ErrNothingToRepair: the oplog has no corrupt record.
var ErrNothingToRepair = errors.New("oplog: nothing to repair")

// maxRepairScan bounds the bytes after a corrupt record that Repair reads
// to count the entries it drops.
const maxRepairScan = 64 << 20

// Repaired is what Repair did to one worker's oplog.
type Repaired struct {
	// Path is the oplog file.
	Path string `json:"path"`
	// Offset is where the first corrupt record started: the file now ends
	// there.
	Offset int64 `json:"offset"`
	// LastGood is the index of the last entry kept (the oplog's first
	// index minus one when none is).
	LastGood uint64 `json:"last_good"`
	// DroppedBytes were cut off: the corrupt record and all after it.
	DroppedBytes int64 `json:"dropped_bytes"`
	// DroppedEntries is how many records the cut bytes held: the corrupt
	// one, and each whole record with a good checksum after it; -1 when
	// they were too many bytes to count (over 64 MiB).
	DroppedEntries int `json:"dropped_entries"`
	// Reason is the corruption found.
	Reason string `json:"reason"`
}

// Repair cuts worker's oplog in dir back to its last good record: the
// first corrupt record (a bad checksum, length or index) and everything
// after it are removed, so that delivery goes on and appends resume at the
// index after the last good entry. It takes the oplog's lock (ErrLocked
// while a writer holds it: stop the daemon, or the worker's writer,
// first) and returns ErrNothingToRepair, changing nothing, when no record
// is corrupt (a torn end is not corruption: the next Writer cuts it).
func Repair(dir, worker string) (Repaired, error) {
	if err := CheckWorkerID(worker); err != nil {
		return Repaired{}, err
	}
	path := Path(dir, worker)
	out := Repaired{Path: path}
	f, err := openLocked(path, os.O_RDWR)
	if errors.Is(err, ErrLocked) {
		return out, fmt.Errorf("%w: stop the daemon (or the worker's writer) before repairing it", err)
	}
	if err != nil {
		return out, err
	}
	defer f.Close()
	hl, first, err := readHeader(f, path, worker)
	if err != nil {
		return out, fmt.Errorf("%w (a header cannot be repaired: move the file away)", err)
	}
	r := newReader(f, path, worker, hl, first)
	cause := r.skip()
	if !errors.Is(cause, ErrCorrupt) {
		if cause != nil && !errors.Is(cause, ErrTorn) {
			return out, cause
		}
		return out, fmt.Errorf("%w: %s", ErrNothingToRepair, path)
	}
	fi, err := f.Stat()
	if err != nil {
		return out, fmt.Errorf("oplog: %w", err)
	}
	out.Offset, out.LastGood, out.Reason = r.off, r.next-1, cause.Error()
	out.DroppedBytes = fi.Size() - r.off
	out.DroppedEntries = countRecords(f, r.off, fi.Size())
	if err := f.Truncate(r.off); err != nil {
		return out, fmt.Errorf("oplog: cutting %s at offset %d: %w", path, r.off, err)
	}
	if err := f.Sync(); err != nil {
		return out, fmt.Errorf("oplog: %w", err)
	}
	return out, syncDir(filepath.Dir(path))
}

// countRecords counts the records a cut at from drops: the corrupt one
// there, and those with a good checksum in (from, end) of f, found by
// resynchronising byte by byte after anything else. -1 past maxRepairScan
// bytes.
func countRecords(f *os.File, from, end int64) int {
	if end-from > maxRepairScan {
		return -1
	}
	buf := make([]byte, end-from)
	if _, err := f.ReadAt(buf, from); err != nil && !errors.Is(err, io.EOF) {
		return -1
	}
	n := 1
	for p := 1; p+recHead+bodyFixed <= len(buf); {
		l := int(binary.LittleEndian.Uint32(buf[p:]))
		if l >= bodyFixed && l <= maxBody && p+recHead+l <= len(buf) &&
			crc32.Checksum(buf[p+recHead:p+recHead+l], castagnoli) == binary.LittleEndian.Uint32(buf[p+4:]) {
			n++
			p += recHead + l
			continue
		}
		p++
	}
	return n
}
