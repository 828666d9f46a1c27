package natsjournal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

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

// load returns worker's cursor and its key's revision (0: none).
func (c *cursors) load(ctx context.Context, worker string) (oplog.Cursor, uint64, error) {
	cctx, cancel := c.j.ctx(ctx)
	defer cancel()
	e, err := c.j.kv.Get(cctx, c.prefix+Token(worker))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return oplog.Cursor{Worker: worker}, 0, nil
	}
	if err != nil {
		return oplog.Cursor{}, 0, c.j.unavailable("reading the cursor of "+worker, err)
	}
	var cur oplog.Cursor
	if err := json.Unmarshal(e.Value(), &cur); err != nil || cur.Worker != worker {
		return oplog.Cursor{}, 0, fmt.Errorf("%w: the cursor of %s in bucket %s (revision %d) is not one: %v",
			oplog.ErrCorrupt, worker, c.j.cfg.Bucket, e.Revision(), err)
	}
	return cur, e.Revision(), nil
}

func (c *cursors) Get(ctx context.Context, worker string) (oplog.Cursor, error) {
	cur, _, err := c.load(ctx, worker)
	return cur, err
}

func (c *cursors) Put(ctx context.Context, old, next oplog.Cursor) error {
	if next.Worker != old.Worker {
		return fmt.Errorf("natsjournal: a cursor of %s put in place of one of %s", next.Worker, old.Worker)
	}
	have, rev, err := c.load(ctx, old.Worker)
	if err != nil {
		return err
	}
	if have != old {
		return fmt.Errorf("%w: %s: acked %d, not %d", oplog.ErrCursorMoved, old.Worker, have.Acked, old.Acked)
	}
	data, err := json.Marshal(next)
	if err != nil {
		return err
	}
	cctx, cancel := c.j.ctx(ctx)
	defer cancel()
	key := c.prefix + Token(old.Worker)
	if rev == 0 {
		_, err = c.j.kv.Create(cctx, key, data)
	} else {
		_, err = c.j.kv.Update(cctx, key, data, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLast(err) {
		return fmt.Errorf("%w: %s: moved by another writer", oplog.ErrCursorMoved, old.Worker)
	}
	if err != nil {
		return c.j.unavailable("writing the cursor of "+old.Worker, err)
	}
	return nil
}
