package oplog

import (
	"context"
	"errors"
	"fmt"

	"github.com/soplug/soplug/contract"
)

// MigrateResult is what Migrate did for one worker.
type MigrateResult struct {
	Worker string `json:"worker"`
	// Copied is how many entries the destination did not hold yet.
	Copied int `json:"copied"`
	// Verified is how many of the source's entries the destination was
	// read back holding, identical.
	Verified int `json:"verified"`
	// Cursors are the processors whose cursor was carried over.
	Cursors []string `json:"cursors"`
}

// migrateChunk is how many entries Migrate appends at once.
const migrateChunk = 1000

// Migrate copies every worker's journal from src to dst, and each named
// processor's cursor from srcCursors(name) to dst's. Appending is a
// resend (Writer.Put's rules): entries dst holds are compared, not
// written again, so a migration that stopped part-way is run again from
// the start, and one that differs from what dst holds stops with the
// *ConflictError. Every entry is then read back from dst and compared. A
// cursor is carried (at its position in dst) unless dst's is as far
// already. progress is told of each worker done.
func Migrate(ctx context.Context, src, dst Journal, processors []string, srcCursors func(name string) (CursorStore, error), progress func(MigrateResult)) error {
	workers, err := src.Workers(ctx)
	if err != nil {
		return fmt.Errorf("oplog: listing the source's workers: %w", err)
	}
	from := map[string]CursorStore{}
	to := map[string]CursorStore{}
	for _, name := range processors {
		if from[name], err = srcCursors(name); err != nil {
			return err
		}
		if to[name], err = dst.Cursors(name); err != nil {
			return err
		}
	}
	for _, w := range workers {
		res := MigrateResult{Worker: w, Cursors: []string{}}
		if res.Copied, res.Verified, err = migrateJournal(ctx, src, dst, w); err != nil {
			return err
		}
		for _, name := range processors {
			carried, err := migrateCursor(ctx, dst, w, from[name], to[name])
			if err != nil {
				return fmt.Errorf("oplog: the cursor of %s for %s: %w", w, name, err)
			}
			if carried {
				res.Cursors = append(res.Cursors, name)
			}
		}
		if progress != nil {
			progress(res)
		}
	}
	return nil
}

// migrateJournal copies worker's entries and reads them back.
func migrateJournal(ctx context.Context, src, dst Journal, worker string) (copied, verified int, err error) {
	head, err := src.Head(ctx, worker)
	if errors.Is(err, ErrNoJournal) {
		return 0, 0, nil // gone since the listing
	}
	if err != nil {
		return 0, 0, err
	}
	at := head
	for {
		es, next, err := src.Read(ctx, worker, at, migrateChunk, 16<<20)
		if err != nil {
			return copied, verified, fmt.Errorf("oplog: reading %s: %w", worker, err)
		}
		if len(es) == 0 {
			break
		}
		n, err := dst.Append(ctx, worker, head.Next, es)
		if err != nil {
			return copied, verified, fmt.Errorf("oplog: copying %s from entry %d: %w", worker, es[0].Index, err)
		}
		copied += n
		at = next
	}
	// Read both back, entry by entry.
	sAt := head
	dHead, err := dst.Head(ctx, worker)
	if err != nil {
		return copied, 0, err
	}
	dAt := dHead
	var pending []contract.Entry
	for {
		es, next, err := src.Read(ctx, worker, sAt, migrateChunk, 16<<20)
		if err != nil {
			return copied, verified, err
		}
		if len(es) == 0 {
			return copied, verified, nil
		}
		sAt = next
		for _, e := range es {
			for len(pending) == 0 {
				got, dn, err := dst.Read(ctx, worker, dAt, migrateChunk, 16<<20)
				if err != nil {
					return copied, verified, err
				}
				if len(got) == 0 {
					return copied, verified, fmt.Errorf("%w: %s: the copy ends before entry %d", ErrCorrupt, worker, e.Index)
				}
				pending, dAt = got, dn
			}
			g := pending[0]
			pending = pending[1:]
			if g.Index != e.Index || !e.Timestamp.Equal(g.Timestamp) {
				return copied, verified, fmt.Errorf("%w: %s: the copy holds entry %d (%s) where the source has %d (%s)",
					ErrCorrupt, worker, g.Index, g.Timestamp, e.Index, e.Timestamp)
			}
			if err := Same(worker, g, e); err != nil {
				return copied, verified, err
			}
			verified++
		}
	}
}

// migrateCursor carries worker's cursor from one store to the other, at
// its position in dst.
func migrateCursor(ctx context.Context, dst Journal, worker string, from, to CursorStore) (bool, error) {
	c, err := from.Get(ctx, worker)
	if err != nil {
		return false, err
	}
	if c.Acked == 0 && c.InFlight == 0 {
		return false, nil // nothing delivered
	}
	have, err := to.Get(ctx, worker)
	if err != nil {
		return false, err
	}
	if have.Acked >= c.Acked && have.InFlight >= c.InFlight {
		return false, nil
	}
	next := Cursor{Worker: worker, Acked: c.Acked, InFlight: c.InFlight}
	if c.Offset > 0 {
		// Where, in dst, the entry after the acknowledged one is.
		at, err := dst.Head(ctx, worker)
		if err != nil {
			return false, err
		}
		for at.Next <= c.Acked {
			es, pos, err := dst.Read(ctx, worker, at, int(min(c.Acked-at.Next+1, migrateChunk)), 16<<20)
			if err != nil {
				return false, err
			}
			if len(es) == 0 {
				return false, fmt.Errorf("%w: it acknowledges entry %d, past the journal's end", ErrCorrupt, c.Acked)
			}
			at = pos
		}
		next.Offset = at.At
	}
	return true, to.Put(ctx, have, next)
}
