package oplog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/soplug/soplug/contract"
)

// AppendRecords appends entries to b as oplog records (the format in the
// package comment), for a Journal that stores runs of entries in messages
// of its own; an entry without a timestamp is recorded with now, as Stamp
// would stamp it, and entries are left as they are. The entries must have
// passed CheckStamped with the same now.
func AppendRecords(b []byte, entries []contract.Entry, now time.Time) []byte {
	for i := range entries {
		e := &entries[i]
		if e.Timestamp.IsZero() {
			stamped := *e
			stamped.Timestamp = now
			e = &stamped
		}
		b = appendRecord(b, e)
	}
	return b
}

// DecodeRecords decodes the records AppendRecords wrote into entries of
// worker, checking each record's length and CRC (an error wrapping
// ErrCorrupt names where, in what). Payloads alias data.
func DecodeRecords(data []byte, worker, what string) ([]contract.Entry, error) {
	var out []contract.Entry
	kinds := map[string]string{}
	for off := 0; off < len(data); {
		if len(data)-off < recHead {
			return nil, posError(ErrCorrupt, what, int64(off), "%d bytes, not a record header", len(data)-off)
		}
		n := int(binary.LittleEndian.Uint32(data[off:]))
		if n > maxBody || n > len(data)-off-recHead {
			return nil, posError(ErrCorrupt, what, int64(off), "a body of %d bytes in %d", n, len(data)-off-recHead)
		}
		body := data[off+recHead : off+recHead+n]
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[off+4:]) {
			return nil, posError(ErrCorrupt, what, int64(off), "checksum mismatch")
		}
		e, err := decodeBody(body, worker, kinds)
		if err != nil {
			return nil, fmt.Errorf("%w: %s at offset %d: %w", ErrCorrupt, what, off, err)
		}
		out = append(out, e)
		off += recHead + n
	}
	return out, nil
}
