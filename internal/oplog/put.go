package oplog

import (
	"bytes"
	"fmt"
	"time"

	"github.com/soplug/soplug/contract"
)

// ConflictError is a resend that overlaps the oplog with an entry that
// differs from the one it holds at that index; it wraps ErrConflict.
type ConflictError struct {
	// Path is the oplog file.
	Path string
	// Index is the first index whose entry differs.
	Index uint64
	// Field is what differs: "kind", "timestamp" or "payload".
	Field string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%v: %s: entry %d differs from the one the oplog holds (its %s)", ErrConflict, e.Path, e.Index, e.Field)
}

// Unwrap returns ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// recentMarks is how many appends' first index and offset a Writer keeps,
// so that a resend of a recent append finds its entries without reading
// the oplog from the start.
const recentMarks = 64

// recordAt is where the record of an index starts.
type recordAt struct {
	index uint64
	off   int64
}

// Put appends entries as an at-least-once sender needs: entries already in
// the oplog are compared, not written again. The entries' indexes must
// run without a gap among themselves and start at or before Next().
//
//   - All of them are in the oplog, identical: nothing is written, and Put
//     returns 0.
//   - Some are, identical, and the rest follow: only the rest is appended,
//     and Put returns how many.
//   - One that is in the oplog differs (kind, timestamp or payload): a
//     *ConflictError naming the first such index; nothing is written.
//   - The first index is past Next(): an *OrderError, as for Append;
//     before First(): an error wrapping ErrConflict.
//
// An entry with a zero Timestamp matches any stored timestamp, and is
// stored with the time of the call when it is new.
func (w *Writer) Put(entries []contract.Entry) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	overlap, err := Overlap(w.path, w.first, w.next, entries)
	if err != nil {
		return 0, err
	}
	if overlap > 0 {
		if err := w.compare(entries[:overlap]); err != nil {
			return 0, err
		}
	}
	tail := entries[overlap:]
	if err := Stamp(w.worker, tail, time.Now().UTC()); err != nil {
		return 0, err
	}
	if err := w.stage(tail); err != nil {
		return 0, err
	}
	// A resend of entries written and not yet synced is answered with
	// their sync, as they will be.
	if err := w.commit(w.size); err != nil {
		return 0, err
	}
	return len(tail), nil
}

// Overlap applies Put's rules to an append of entries to the journal
// named name, whose entries run from first to next-1: it returns how many
// of entries the journal holds already (to be compared with Same), or the
// *OrderError of a gap or of indexes that do not run on, or an error
// wrapping ErrConflict for entries before first. Every Journal follows
// these rules.
func Overlap(name string, first, next uint64, entries []contract.Entry) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	start := entries[0].Index
	for i := range entries {
		if want := start + uint64(i); entries[i].Index != want {
			return 0, &OrderError{Path: name, Expected: want, Got: entries[i].Index}
		}
	}
	if start > next || start == 0 {
		return 0, &OrderError{Path: name, Expected: next, Got: start}
	}
	if start < first {
		return 0, fmt.Errorf("%w: %s: entry %d is before the oplog's first index %d", ErrConflict, name, start, first)
	}
	return int(min(uint64(len(entries)), next-start)), nil
}

// Begin applies the start rules of an append whose first entry has index
// got and whose first_index is start (0: none given) to the journal named
// name: held says whether it holds entries, from first. It returns the
// journal's first index: its own, when start is 0 or the same (else an
// error wrapping ErrConflict); for a new journal, start or 1, which the
// append must begin at (else an *OrderError). Every Journal follows these
// rules.
func Begin(name string, held bool, first, start, got uint64) (uint64, error) {
	if held {
		if start != 0 && start != first {
			return 0, fmt.Errorf("%w: %s starts at index %d, not at the first_index %d", ErrConflict, name, first, start)
		}
		return first, nil
	}
	begin := max(start, 1)
	if got != begin {
		return 0, &OrderError{Path: name, Expected: begin, Got: got}
	}
	return begin, nil
}

// Stamp gives the new entries of an append that have no timestamp the
// time now, and checks each (CheckEntry) for worker.
func Stamp(worker string, entries []contract.Entry, now time.Time) error {
	for i := range entries {
		if entries[i].Timestamp.IsZero() {
			entries[i].Timestamp = now
		}
		if err := CheckEntry(worker, &entries[i]); err != nil {
			return err
		}
	}
	return nil
}

// CheckStamped reports what Stamp would (an error wrapping ErrEntry) of
// entries stamped with now, and leaves them as they are: for a journal
// that records them with AppendRecords.
func CheckStamped(worker string, entries []contract.Entry, now time.Time) error {
	for i := range entries {
		e := entries[i]
		if e.Timestamp.IsZero() {
			e.Timestamp = now
		}
		if err := CheckEntry(worker, &e); err != nil {
			return err
		}
	}
	return nil
}

// Same returns the *ConflictError of sent, a resent entry, unless it is
// held, the entry the journal named name holds at its index: the same kind
// and payload, and the same timestamp unless sent's is zero.
func Same(name string, held, sent contract.Entry) error {
	switch {
	case held.Kind != sent.Kind:
		return &ConflictError{Path: name, Index: sent.Index, Field: "kind"}
	case !sent.Timestamp.IsZero() && !held.Timestamp.Equal(sent.Timestamp):
		return &ConflictError{Path: name, Index: sent.Index, Field: "timestamp"}
	case !bytes.Equal(held.Payload, sent.Payload):
		return &ConflictError{Path: name, Index: sent.Index, Field: "payload"}
	}
	return nil
}

// compare checks that the oplog holds entries, which start before Next().
func (w *Writer) compare(entries []contract.Entry) error {
	first := entries[0].Index
	m := w.markBefore(first)
	r := newReader(w.f, w.path, w.worker, m.off, m.index)
	r.first, r.limit = w.first, func() (int64, bool) { return w.size, true }
	i := 0
	for i < len(entries) {
		got, err := r.Read(recentMarks<<4, 4<<20)
		if err != nil {
			return fmt.Errorf("oplog: reading %s to compare a resend: %w", w.path, err)
		}
		if len(got) == 0 {
			return fmt.Errorf("%w: %s ends before entry %d, below its next index %d", ErrCorrupt, w.path, entries[i].Index, w.next)
		}
		for _, g := range got {
			if g.Index < first {
				continue
			}
			if err := Same(w.path, g, entries[i]); err != nil {
				return err
			}
			if i++; i == len(entries) {
				return nil
			}
		}
	}
	return nil
}

// markBefore returns the latest known record start at or before index:
// one of the recent appends', else the first record's.
func (w *Writer) markBefore(index uint64) recordAt {
	best := w.start
	for _, m := range w.recent {
		if m.index <= index && m.index > best.index {
			best = m
		}
	}
	return best
}

// remember records where the append of first starts.
func (w *Writer) remember(first uint64, off int64) {
	if len(w.recent) < recentMarks {
		w.recent = append(w.recent, recordAt{first, off})
		return
	}
	w.recent[w.recentAt] = recordAt{first, off} // the oldest
	w.recentAt = (w.recentAt + 1) % recentMarks
}
