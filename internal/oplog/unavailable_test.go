package oplog_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/journaltest"
)

// outage is a journal whose reads of journals and cursors fail with
// ErrUnavailable while down is set, as a cluster's do while it elects a
// leader or a request times out.
type outage struct {
	*journaltest.Memory
	down  atomic.Bool
	fails atomic.Int64 // reads refused
}

func (o *outage) refuse(what string) error {
	if o.down.Load() {
		o.fails.Add(1)
		return fmt.Errorf("%w: %s: the cluster has no leader", oplog.ErrUnavailable, what)
	}
	return nil
}

func (o *outage) Head(ctx context.Context, worker string) (oplog.Position, error) {
	if err := o.refuse("head of " + worker); err != nil {
		return oplog.Position{}, err
	}
	return o.Memory.Head(ctx, worker)
}

func (o *outage) Read(ctx context.Context, worker string, at oplog.Position, limit, maxBytes int) ([]contract.Entry, oplog.Position, error) {
	if err := o.refuse("reading " + worker); err != nil {
		return nil, at, err
	}
	return o.Memory.Read(ctx, worker, at, limit, maxBytes)
}

func (o *outage) Cursors(name string) (oplog.CursorStore, error) {
	cs, err := o.Memory.Cursors(name)
	return outageCursors{cs, o}, err
}

type outageCursors struct {
	oplog.CursorStore
	o *outage
}

func (c outageCursors) Get(ctx context.Context, worker string) (oplog.Cursor, error) {
	if err := c.o.refuse("cursor of " + worker); err != nil {
		return oplog.Cursor{}, err
	}
	return c.CursorStore.Get(ctx, worker)
}

// TestDeliveryOutlastsAnOutage: entries appended before or during an
// outage of the journal are delivered once it ends, with no append after
// it to wake their worker; meanwhile the worker shows retrying and why.
// Before, a worker whose read failed waited for an event that never came.
func TestDeliveryOutlastsAnOutage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before bool // the outage begins before delivery opens the worker (its cursor read fails), or after its first batch
	}{
		{"while opening", true},
		{"between batches", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &outage{Memory: journaltest.NewMemory()}
			ctx := context.Background()
			add := func(first uint64, n int) {
				es := make([]contract.Entry, n)
				for i := range es {
					es[i] = contract.Entry{Index: first + uint64(i), Kind: "k", Payload: []byte("x")}
				}
				_, err := o.Append(ctx, "w", 0, es)
				require.NoError(t, err)
			}
			rec := newRecorder()
			if tc.before {
				o.down.Store(true)
				add(1, 10)
			} else {
				add(1, 10)
			}
			d, stop := run(t, oplog.Config{Journal: o, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, rec)
			if !tc.before {
				eventually(t, "the first batch", func() bool { return rec.count("w") == 10 })
				o.down.Store(true)
				add(11, 10) // announced while the journal cannot be read
			}
			eventually(t, "reads refused", func() bool { return o.fails.Load() >= 3 })
			st := status(d, "w")
			assert.Equal(t, oplog.StateRetrying, st.State)
			assert.Contains(t, st.Error, "the cluster has no leader")
			o.down.Store(false) // no append, no event: the worker retries by itself
			want := 10
			if !tc.before {
				want = 20
			}
			eventually(t, "delivered after the outage", func() bool { return rec.count("w") == want })
			stop()
			assert.Equal(t, seq(1, uint64(want)), rec.seen["w"], "once each, in order")
			assert.Empty(t, rec.redel)
		})
	}
}
