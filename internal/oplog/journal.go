package oplog

import (
	"context"
	"errors"

	"github.com/soplug/soplug/contract"
)

// Journal is where the workers' oplogs live: the only way delivery, the
// HTTP appender, the budget and the metrics reach them. FileJournal (a file
// per worker) is the default. Every implementation passes the conformance
// suite in internal/oplog/journaltest, and is safe for concurrent use.
type Journal interface {
	// Append appends entries, whose indexes run without a gap, to
	// worker's journal and returns once they are durable, with how many
	// were new. It follows Writer.Put's rules: a resend identical to what
	// the journal holds writes nothing (0, nil); one that overlaps and
	// extends appends the tail; one that differs is a *ConflictError; a
	// gap is an *OrderError. A journal that does not exist yet is created
	// by an append that starts at start (1 when start is zero), and starts
	// there; start on a journal that starts elsewhere wraps ErrConflict.
	// On any error nothing of the append is visible to Read, ever. It
	// keeps nothing of entries (their payloads included) once it returns:
	// the HTTP appender reuses their memory.
	Append(ctx context.Context, worker string, start uint64, entries []contract.Entry) (int, error)
	// Head returns where worker's journal starts: its first index, and the
	// position of that entry. ErrNoJournal when it does not exist.
	Head(ctx context.Context, worker string) (Position, error)
	// Read returns up to limit of worker's entries from at (a position
	// that Head or an earlier Read returned, and nothing else), about
	// maxBytes in all but at least one, and the position after them. Only
	// durable entries are read: none of an append that has not returned,
	// or failed. Nothing new is (nil, at, nil). With entries it may
	// return the error that stopped it (ErrTorn: wait for an event;
	// ErrCorrupt: nothing after is read until a repair).
	Read(ctx context.Context, worker string, at Position, limit, maxBytes int) ([]contract.Entry, Position, error)
	// Workers lists the workers that have a journal, in no order.
	Workers(ctx context.Context) ([]string, error)
	// Watch calls notify with a worker and Changed whenever it may have
	// new entries or its journal appeared or went away, and with Listed
	// for each worker it lists (at the start, and from time to time for a
	// journal no event announced), until ctx ends (nil) or it cannot
	// watch (the error). Lost events are made good by Changed for every
	// worker. notify must not block.
	Watch(ctx context.Context, notify func(worker string, n Notice)) error
	// Cursors returns the cursor store of the processor named name.
	Cursors(name string) (CursorStore, error)
}

// Notice is what Watch says of a worker.
type Notice int

// The notices of Watch.
const (
	// Changed: the worker may have new entries, or its journal appeared
	// or went away.
	Changed Notice = iota
	// Listed: the worker has a journal; nothing is known to have changed.
	Listed
)

// Position is a place in a worker's journal: the index of the entry there,
// and where it is, in the journal's own terms (a file offset, a stream
// sequence). Only the journal that returned it may interpret At.
type Position struct {
	Next uint64 `json:"next"`
	At   int64  `json:"at"`
}

// CursorStore keeps one processor's cursors, one per worker.
type CursorStore interface {
	// Get returns worker's cursor; a worker with none has the zero Cursor
	// with Worker set (nothing acknowledged, no position).
	Get(ctx context.Context, worker string) (Cursor, error)
	// Put replaces worker's cursor old with c, durably: only while the
	// store holds old (compare-and-set); otherwise ErrCursorMoved and
	// nothing changes.
	Put(ctx context.Context, old, c Cursor) error
}

// Errors of journals and cursor stores; check them with errors.Is.
var (
	// ErrNoJournal: the worker has no journal (yet, or any more). A
	// file journal's wraps os.ErrNotExist too.
	ErrNoJournal = errors.New("oplog: no journal")
	// ErrCursorMoved: a cursor that is not the one the caller read.
	ErrCursorMoved = errors.New("oplog: the cursor moved")
	// ErrUnavailable: the journal cannot be reached now; try again later.
	ErrUnavailable = errors.New("oplog: the journal is unavailable")
)
