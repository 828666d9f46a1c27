// Package oplog keeps workers' oplogs (their journals of operations) and
// delivers them to an OplogProcessor: every entry of every worker, in index
// order, each exactly once except for a batch in flight at a crash, which
// is delivered again with Batch.Redelivery set.
//
// A worker's oplog is one append-only file, <dir>/<worker>.oplog: a header
// naming the worker, then one record per entry:
//
//	header  "SOPLUGOL" | version (1 byte) | id length (1 byte) | worker id | [first index (8)] | CRC-32C of the preceding bytes (4)
//	record  body length (4) | CRC-32C of the body (4) | body
//	body    index (8) | timestamp, Unix nanoseconds (8) | kind length (1) | kind | payload
//
// Version 1 has no first index: the oplog starts at index 1. Version 2,
// written only for an oplog that starts elsewhere (a worker attached
// mid-life), names its first index. Integers are little-endian. A record whose bytes are not all there yet
// (a writer in the middle of an append, or one that died in it) is torn:
// readers stop before it and wait; the next Writer of that worker cuts it
// off. A complete record whose CRC, length or index is wrong is corrupt:
// it is reported with the file and offset and never delivered, and nothing
// after it is either.
package oplog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	"github.com/soplug/soplug/contract"
)

// Errors, wrapped with the file, the offset and the detail; check them with
// errors.Is.
var (
	// ErrCorrupt: a complete record or header that is wrong: its checksum,
	// its length, or its index.
	ErrCorrupt = errors.New("oplog: corrupt record")
	// ErrTorn: the file ends inside a record. A reader waits for the
	// writer to finish it.
	ErrTorn = errors.New("oplog: torn record")
	// ErrOutOfOrder: an append whose first index is not the next one.
	ErrOutOfOrder = errors.New("oplog: out-of-order append")
	// ErrConflict: a resend whose entry differs from the one the oplog
	// holds at its index.
	ErrConflict = errors.New("oplog: a resend differs from the oplog")
	// ErrWorkerID: a worker ID that cannot name a file.
	ErrWorkerID = errors.New("oplog: invalid worker ID")
	// ErrLocked: another writer holds the worker's oplog.
	ErrLocked = errors.New("oplog: the oplog is being written by another process")
	// ErrEntry: an entry that cannot be recorded (a kind too long, a
	// payload too large, another worker's ID).
	ErrEntry = errors.New("oplog: invalid entry")
)

// Limits of one record.
const (
	// MaxKind is the longest kind, in bytes.
	MaxKind = 255
	// MaxPayload is the largest payload, in bytes.
	MaxPayload = 16 << 20
	// Suffix ends every oplog file name.
	Suffix = ".oplog"

	magic      = "SOPLUGOL"
	version    = 1         // an oplog that starts at index 1
	versionAt  = 2         // one that starts at the index its header names
	recHead    = 8         // body length and CRC
	bodyFixed  = 8 + 8 + 1 // index, timestamp, kind length
	maxBody    = bodyFixed + MaxKind + MaxPayload
	maxWorkerB = 128
)

// MinTimestamp and MaxTimestamp bound an entry's timestamp: a record keeps
// it as int64 Unix nanoseconds, which reach from 1677 to 2262.
var (
	MinTimestamp = time.Unix(0, math.MinInt64).UTC()
	MaxTimestamp = time.Unix(0, math.MaxInt64).UTC()
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CheckWorkerID returns an error wrapping ErrWorkerID unless id is 1 to
// 128 letters, digits, '_', '.' or '-', starting with a letter or digit.
// (A loop, not a regular expression: compiling ^…{0,127}$ at start cost
// every runner process, the probe children and stop-post included, 0.7 ms
// and 1,700 allocations.)
func CheckWorkerID(id string) error {
	if !validWorkerID(id) {
		return fmt.Errorf("%w: %q: use 1 to 128 letters, digits, '_', '.' and '-', starting with a letter or digit", ErrWorkerID, id)
	}
	return nil
}

// validWorkerID is CheckWorkerID's rule, ASCII only: a byte of a
// multi-byte character is none of the allowed ones.
func validWorkerID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

// header returns the file header of worker's oplog, whose first entry has
// index first: version 1 for 1, else version 2.
func header(worker string, first uint64) []byte {
	v := byte(version)
	if first != 1 {
		v = versionAt
	}
	b := append([]byte(magic), v, byte(len(worker)))
	b = append(b, worker...)
	if first != 1 {
		b = binary.LittleEndian.AppendUint64(b, first)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// appendRecord appends e's record to b.
func appendRecord(b []byte, e *contract.Entry) []byte {
	bodyLen := bodyFixed + len(e.Kind) + len(e.Payload)
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, uint32(bodyLen))
	b = append(b, 0, 0, 0, 0) // CRC, below
	b = binary.LittleEndian.AppendUint64(b, e.Index)
	b = binary.LittleEndian.AppendUint64(b, uint64(e.Timestamp.UnixNano()))
	b = append(b, byte(len(e.Kind)))
	b = append(b, e.Kind...)
	b = append(b, e.Payload...)
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+recHead:], castagnoli))
	return b
}

// CheckEntry reports why e cannot be recorded for worker (an error
// wrapping ErrEntry): another worker's ID, a kind or payload too large, a
// timestamp out of range. Every Journal refuses what it refuses.
func CheckEntry(worker string, e *contract.Entry) error {
	switch {
	case e.WorkerID != "" && e.WorkerID != worker:
		return fmt.Errorf("%w: entry %d belongs to worker %q, not %q", ErrEntry, e.Index, e.WorkerID, worker)
	case len(e.Kind) > MaxKind:
		return fmt.Errorf("%w: entry %d: kind is %d bytes, at most %d", ErrEntry, e.Index, len(e.Kind), MaxKind)
	case len(e.Payload) > MaxPayload:
		return fmt.Errorf("%w: entry %d: payload is %d bytes, at most %d", ErrEntry, e.Index, len(e.Payload), MaxPayload)
	case e.Timestamp.Before(MinTimestamp) || e.Timestamp.After(MaxTimestamp):
		return fmt.Errorf("%w: entry %d: timestamp %s is outside what an oplog stores (%s to %s)", ErrEntry, e.Index,
			e.Timestamp.UTC().Format(time.RFC3339Nano), MinTimestamp.Format(time.RFC3339Nano), MaxTimestamp.Format(time.RFC3339Nano))
	}
	return nil
}

// decodeBody decodes a record body whose CRC has been checked. The kind is
// interned through kinds; the payload aliases body.
func decodeBody(body []byte, worker string, kinds map[string]string) (contract.Entry, error) {
	if len(body) < bodyFixed {
		return contract.Entry{}, fmt.Errorf("body of %d bytes, at least %d", len(body), bodyFixed)
	}
	kl := int(body[16])
	if bodyFixed+kl > len(body) {
		return contract.Entry{}, fmt.Errorf("kind of %d bytes in a body of %d", kl, len(body))
	}
	kb := body[bodyFixed : bodyFixed+kl]
	kind, ok := kinds[string(kb)]
	if !ok {
		kind = string(kb)
		if len(kinds) < 1024 {
			kinds[kind] = kind
		}
	}
	return contract.Entry{
		WorkerID:  worker,
		Index:     binary.LittleEndian.Uint64(body),
		Timestamp: time.Unix(0, int64(binary.LittleEndian.Uint64(body[8:]))).UTC(),
		Kind:      kind,
		Payload:   body[bodyFixed+kl:],
	}, nil
}

// posError wraps sentinel with the file and offset.
func posError(sentinel error, file string, off int64, format string, args ...any) error {
	return fmt.Errorf("%w: %s at offset %d: %s", sentinel, file, off, fmt.Sprintf(format, args...))
}
