package oplog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/soplug/soplug/contract"
)

// Path returns the file of worker's oplog in dir.
func Path(dir, worker string) string { return filepath.Join(dir, worker+Suffix) }

// Reader reads one worker's oplog, record by record, from a record
// boundary. It never reads past a torn or corrupt record.
type Reader struct {
	path   string
	worker string
	f      *os.File
	off    int64  // offset of the next record
	next   uint64 // the index the next record must have
	first  uint64 // the oplog's first index
	kinds  map[string]string
	// limit, when set, reports the committed end of the worker's oplog
	// (watermarks): nothing past it is read.
	limit func() (int64, bool)
}

// OpenReader opens worker's oplog in dir at its first record. A file that
// does not exist yet is os.ErrNotExist; one whose header is incomplete is
// ErrTorn (a writer creating it); a wrong header is ErrCorrupt.
func OpenReader(dir, worker string) (*Reader, error) {
	if err := CheckWorkerID(worker); err != nil {
		return nil, err
	}
	path := Path(dir, worker)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	hl, first, err := readHeader(f, path, worker)
	if err != nil {
		f.Close()
		return nil, err
	}
	return newReader(f, path, worker, hl, first), nil
}

// newReader reads f, worker's oplog at path, from its first record, at
// offset hl, of index first.
func newReader(f *os.File, path, worker string, hl int64, first uint64) *Reader {
	return &Reader{path: path, worker: worker, f: f, off: hl, next: first, first: first, kinds: map[string]string{}}
}

// skip reads on to the end of the committed records, and returns the
// torn or corrupt record that stopped it, if any: r is then at its start.
func (r *Reader) skip() error {
	for {
		es, err := r.Read(1<<16, 4<<20)
		if err != nil || len(es) == 0 {
			return err
		}
	}
}

// readHeader checks the header of worker's oplog and returns its length
// and the oplog's first index.
func readHeader(f *os.File, path, worker string) (int64, uint64, error) {
	got := make([]byte, len(magic)+2+maxWorkerB+8+4)
	n, err := f.ReadAt(got, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, 0, fmt.Errorf("oplog: %s: %w", path, err)
	}
	got = got[:n]
	// The header it must be: the file's version byte says which (a file
	// cut before it may be either). Both start with the same fixed part.
	fixed := len(magic) + 2 + len(worker)
	want, first := header(worker, 1), uint64(1)
	if len(got) <= len(magic) {
		if bytes.HasPrefix(want, got) {
			return 0, 0, posError(ErrTorn, path, 0, "the header is %d bytes, cut short", n)
		}
		return 0, 0, posError(ErrCorrupt, path, 0, "not an oplog of worker %q", worker)
	}
	if got[len(magic)] == versionAt {
		want = header(worker, 2) // for its length and fixed part
	}
	if len(got) < len(want) {
		if bytes.HasPrefix(want[:fixed], got[:min(len(got), fixed)]) {
			return 0, 0, posError(ErrTorn, path, 0, "the header is %d of %d bytes", n, len(want))
		}
		return 0, 0, posError(ErrCorrupt, path, 0, "not an oplog of worker %q", worker)
	}
	got = got[:len(want)]
	if !bytes.Equal(got[:fixed], want[:fixed]) || crc32.Checksum(got[:len(got)-4], castagnoli) != binary.LittleEndian.Uint32(got[len(got)-4:]) {
		return 0, 0, posError(ErrCorrupt, path, 0, "not an oplog of worker %q (a header for another worker, version or checksum)", worker)
	}
	if want[len(magic)] == versionAt {
		if first = binary.LittleEndian.Uint64(got[fixed:]); first < 2 {
			return 0, 0, posError(ErrCorrupt, path, 0, "a first index of %d", first)
		}
	}
	return int64(len(want)), first, nil
}

// Close closes the file.
func (r *Reader) Close() error { return r.f.Close() }

// Path returns the file being read.
func (r *Reader) Path() string { return r.path }

// Offset returns the offset of the next record.
func (r *Reader) Offset() int64 { return r.off }

// First returns the index the oplog starts at: 1, or the one its header
// names.
func (r *Reader) First() uint64 { return r.first }

// Next returns the index the next record must have.
func (r *Reader) Next() uint64 { return r.next }

// Resume positions the reader at offset off, a record boundary where the
// record of index next starts (a cursor's). The next Read checks that the
// record there has that index.
func (r *Reader) Resume(off int64, next uint64) { r.off, r.next = off, next }

// Read returns the next records, at most max of them and about maxBytes in
// all (at least one record, however large), and advances past them.
// Nothing to read is (nil, nil). At a torn record it returns the complete
// records before it and an error wrapping ErrTorn; at a corrupt one, those
// before it and an error wrapping ErrCorrupt. The file is read in chunks
// of at most readChunk bytes (more only for a larger record), which the
// entries' payloads share.
func (r *Reader) Read(max, maxBytes int) ([]contract.Entry, error) {
	var entries []contract.Entry
	consumed, need := 0, 0
	for len(entries) < max && consumed < maxBytes {
		fi, err := r.f.Stat()
		if err != nil {
			return entries, fmt.Errorf("oplog: %s: %w", r.path, err)
		}
		end := fi.Size()
		if r.limit != nil { // after the Stat: a writer publishes its watermark before it writes
			if l, ok := r.limit(); ok && l < end {
				end = l
			}
		}
		avail := end - r.off
		if avail <= 0 {
			break
		}
		size := max64(min(int64(readChunk), int64(maxBytes-consumed), avail), int64(need))
		chunk := make([]byte, min(size, avail))
		n, err := r.f.ReadAt(chunk, r.off)
		if err != nil && !errors.Is(err, io.EOF) {
			return entries, fmt.Errorf("oplog: %s: %w", r.path, err)
		}
		atEOF := int64(n) >= avail
		var p int
		p, need, err = r.decode(chunk[:n], max-len(entries), &entries)
		r.off += int64(p)
		consumed += p
		switch {
		case err != nil:
			return entries, err
		case need == 0 && atEOF:
			return entries, nil
		case need > 0 && atEOF:
			return entries, posError(ErrTorn, r.path, r.off, "%d of the record's %d bytes are there", n-p, need)
		case need > 0 && len(entries) > 0 && consumed+need > maxBytes:
			return entries, nil // the next record would pass maxBytes: next call
		}
	}
	return entries, nil
}

// readChunk is the most Read reads at once, unless one record is larger.
const readChunk = 256 << 10

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// decode appends up to max records from chunk (read at r.off) to entries.
// It returns the bytes consumed and, when it stopped at a record that is
// not wholly in chunk, that record's size (0 at the end of chunk).
func (r *Reader) decode(chunk []byte, max int, entries *[]contract.Entry) (int, int, error) {
	p := 0
	for n := 0; n < max; n++ {
		rest := chunk[p:]
		if len(rest) == 0 {
			return p, 0, nil
		}
		if len(rest) < recHead {
			return p, recHead, nil
		}
		bodyLen := int(binary.LittleEndian.Uint32(rest))
		if bodyLen < bodyFixed || bodyLen > maxBody {
			return p, 0, posError(ErrCorrupt, r.path, r.off+int64(p), "a record length of %d bytes (%d to %d allowed)", bodyLen, bodyFixed, maxBody)
		}
		if len(rest) < recHead+bodyLen {
			return p, recHead + bodyLen, nil
		}
		body := rest[recHead : recHead+bodyLen]
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(rest[4:]) {
			return p, 0, posError(ErrCorrupt, r.path, r.off+int64(p), "checksum mismatch in a record of %d bytes", bodyLen)
		}
		e, err := decodeBody(body, r.worker, r.kinds)
		if err != nil {
			return p, 0, posError(ErrCorrupt, r.path, r.off+int64(p), "%v", err)
		}
		if e.Index != r.next {
			return p, 0, posError(ErrCorrupt, r.path, r.off+int64(p), "index %d where %d belongs", e.Index, r.next)
		}
		*entries = append(*entries, e)
		r.next++
		p += recHead + bodyLen
	}
	return p, 0, nil
}
