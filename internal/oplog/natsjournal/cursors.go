package natsjournal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/soplug/soplug/internal/oplog"
)

// Cursors returns the cursors of the processor name: keys
// <Token(name)>.<Token(worker)> of the bucket, written by compare-and-set
// on the key's revision, so that of runners racing to move one cursor
// exactly one wins.
func (j *Journal) Cursors(name string) (oplog.CursorStore, error) {
	if err := oplog.CheckWorkerID(name); err != nil {
		return nil, fmt.Errorf("natsjournal: processor name: %w", err)
	}
	return &cursors{j: j, prefix: Token(name) + "."}, nil
}

type cursors struct {
	j      *Journal
	prefix string
}

// record is a cursor key's value: the cursor, and the lease of the
// runner that delivers the worker.
type record struct {
	oplog.Cursor
	Owner string    `json:"owner,omitempty"`
	Until time.Time `json:"until,omitzero"`
}

// load returns worker's record and its key's revision (0: none).
func (c *cursors) load(ctx context.Context, worker string) (record, uint64, error) {
	cctx, cancel := c.j.ctx(ctx)
	defer cancel()
	value, rev, err := c.j.kvGet(cctx, c.prefix+Token(worker))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return record{Cursor: oplog.Cursor{Worker: worker}}, 0, nil
	}
	if err != nil {
		return record{}, 0, c.j.unavailable("reading the cursor of "+worker, err)
	}
	var r record
	if err := json.Unmarshal(value, &r); err != nil || r.Worker != worker {
		return record{}, 0, fmt.Errorf("%w: the cursor of %s in bucket %s (revision %d) is not one: %v",
			oplog.ErrCorrupt, worker, c.j.cfg.Bucket, rev, err)
	}
	return r, rev, nil
}

// store writes r in place of revision rev (0: a new key); false when
// another writer got there first.
func (c *cursors) store(ctx context.Context, r record, rev uint64) (bool, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	cctx, cancel := c.j.ctx(ctx)
	defer cancel()
	key := c.prefix + Token(r.Worker)
	if rev == 0 {
		_, err = c.j.kv.Create(cctx, key, data)
	} else {
		_, err = c.j.kv.Update(cctx, key, data, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLast(err) {
		return false, nil
	}
	if err != nil {
		return false, c.j.unavailable("writing the cursor of "+r.Worker, err)
	}
	return true, nil
}

// leased is the error of a worker whose lease another runner holds.
func (c *cursors) leased(r record) error {
	return &oplog.LeaseError{Worker: r.Worker, Owner: r.Owner, Until: r.Until}
}

// Get returns worker's cursor and takes its lease for this runner: an
// *oplog.LeaseError while another runner's lease runs.
func (c *cursors) Get(ctx context.Context, worker string) (oplog.Cursor, error) {
	for range 4 {
		r, rev, err := c.load(ctx, worker)
		if err != nil {
			return oplog.Cursor{}, err
		}
		now := time.Now()
		if r.Owner != "" && r.Owner != c.j.cfg.Owner && now.Before(r.Until) {
			return oplog.Cursor{}, c.leased(r)
		}
		r.Owner, r.Until = c.j.cfg.Owner, now.Add(c.j.cfg.LeaseTTL)
		ok, err := c.store(ctx, r, rev)
		if err != nil {
			return oplog.Cursor{}, err
		}
		if ok {
			return r.Cursor, nil
		}
		// Another runner wrote it meanwhile: look again.
	}
	r, _, err := c.load(ctx, worker)
	if err != nil {
		return oplog.Cursor{}, err
	}
	return oplog.Cursor{}, c.leased(r)
}

// Put replaces worker's cursor old with next and renews this runner's
// lease, only while the bucket holds old under this runner's lease:
// oplog.ErrCursorMoved when the cursor moved, an *oplog.LeaseError when
// another runner took the worker.
func (c *cursors) Put(ctx context.Context, old, next oplog.Cursor) error {
	if next.Worker != old.Worker {
		return fmt.Errorf("natsjournal: a cursor of %s put in place of one of %s", next.Worker, old.Worker)
	}
	r, rev, err := c.load(ctx, old.Worker)
	if err != nil {
		return err
	}
	if r.Owner != "" && r.Owner != c.j.cfg.Owner { // taken, live or lapsed: this runner acknowledges nothing more
		return c.leased(r)
	}
	if r.Cursor != old {
		return fmt.Errorf("%w: %s: acked %d, not %d", oplog.ErrCursorMoved, old.Worker, r.Acked, old.Acked)
	}
	w := record{Cursor: next, Owner: c.j.cfg.Owner, Until: time.Now().Add(c.j.cfg.LeaseTTL)}
	ok, err := c.store(ctx, w, rev)
	if err != nil {
		return err
	}
	if !ok {
		if r, _, err := c.load(ctx, old.Worker); err == nil && r.Owner != c.j.cfg.Owner {
			return c.leased(r)
		}
		return fmt.Errorf("%w: %s: moved by another writer", oplog.ErrCursorMoved, old.Worker)
	}
	return nil
}
