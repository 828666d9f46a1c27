// Package journaltest is the conformance suite of oplog.Journal: the cases
// every backend passes (Run), and Memory, a journal in memory that follows
// the same rules. A new backend's test calls Run with a Backend.
package journaltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
)

// Backend is a Journal implementation under test.
type Backend struct {
	// New returns an empty journal; the test's cleanup closes it.
	New func(t *testing.T) oplog.Journal
	// Reopen, when set, returns a new journal over what j holds, as after
	// a restart of the process; j is not used again. Nil for a backend
	// whose journals do not outlive it.
	Reopen func(t *testing.T, j oplog.Journal) oplog.Journal
}

// Run runs every conformance case against b.
func Run(t *testing.T, b Backend) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, b) })
	}
}

var cases = []struct {
	name string
	run  func(t *testing.T, b Backend)
}{
	{"AppendHeadRead", testAppendHeadRead},
	{"StartIndex", testStartIndex},
	{"FirstAppendElsewhereCreatesNothing", testFirstAppendElsewhere},
	{"Gap", testGap},
	{"Resend", testResend},
	{"EntryChecks", testEntryChecks},
	{"ReadBounds", testReadBounds},
	{"ManyWorkers", testManyWorkers},
	{"Watch", testWatch},
	{"Cursors", testCursors},
	{"ConcurrentResends", testConcurrentResends},
	{"Reopen", testReopen},
	{"KeepsNothingOfAnAppend", testKeepsNothing},
}

var ctx = context.Background()

// entries returns n entries of worker from index first, each payload
// naming its index.
func entries(worker string, first uint64, n int) []contract.Entry {
	ts := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	out := make([]contract.Entry, n)
	for i := range out {
		idx := first + uint64(i)
		out[i] = contract.Entry{WorkerID: worker, Index: idx, Timestamp: ts.Add(time.Duration(idx) * time.Millisecond),
			Kind: "invoke", Payload: fmt.Appendf(nil, "%s#%d", worker, idx)}
	}
	return out
}

// readAll reads worker's journal from its head to the end.
func readAll(t *testing.T, j oplog.Journal, worker string) []contract.Entry {
	t.Helper()
	at, err := j.Head(ctx, worker)
	require.NoError(t, err)
	var out []contract.Entry
	for {
		got, next, err := j.Read(ctx, worker, at, 1000, 1<<20)
		require.NoError(t, err)
		if len(got) == 0 {
			require.Equal(t, at, next, "a read of nothing keeps the position")
			return out
		}
		require.Equal(t, got[len(got)-1].Index+1, next.Next)
		out = append(out, got...)
		at = next
	}
}

// same asserts that got are want, field by field.
func same(t *testing.T, want, got []contract.Entry) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		assert.Equal(t, want[i].Index, got[i].Index)
		assert.Equal(t, want[i].Kind, got[i].Kind)
		assert.True(t, want[i].Timestamp.Equal(got[i].Timestamp), "entry %d: timestamp %s, want %s", want[i].Index, got[i].Timestamp, want[i].Timestamp)
		assert.True(t, bytes.Equal(want[i].Payload, got[i].Payload), "entry %d: payload", want[i].Index)
		assert.Equal(t, want[i].WorkerID, got[i].WorkerID)
	}
}

func testAppendHeadRead(t *testing.T, b Backend) {
	j := b.New(t)
	_, err := j.Head(ctx, "w")
	require.ErrorIs(t, err, oplog.ErrNoJournal)
	n, err := j.Append(ctx, "w", 0, entries("w", 1, 10))
	require.NoError(t, err)
	assert.Equal(t, 10, n)
	n, err = j.Append(ctx, "w", 0, entries("w", 11, 5))
	require.NoError(t, err)
	assert.Equal(t, 5, n)
	head, err := j.Head(ctx, "w")
	require.NoError(t, err)
	assert.Equal(t, uint64(1), head.Next)
	same(t, entries("w", 1, 15), readAll(t, j, "w"))

	// A position from a read resumes there.
	got, at, err := j.Read(ctx, "w", head, 4, 1<<20)
	require.NoError(t, err)
	require.Len(t, got, 4)
	got, _, err = j.Read(ctx, "w", at, 100, 1<<20)
	require.NoError(t, err)
	same(t, entries("w", 5, 11), got)

	_, _, err = j.Read(ctx, "none", oplog.Position{Next: 1, At: head.At}, 10, 1<<20)
	assert.ErrorIs(t, err, oplog.ErrNoJournal)
	_, err = j.Append(ctx, "../escape", 0, entries("../escape", 1, 1))
	assert.ErrorIs(t, err, oplog.ErrWorkerID)
}

// testKeepsNothing: once Append returns, the caller's entries are its own
// again (the HTTP appender reuses their memory for the next request's).
func testKeepsNothing(t *testing.T, b Backend) {
	j := b.New(t)
	scribble := func(es []contract.Entry) {
		for i := range es {
			for k := range es[i].Payload {
				es[i].Payload[k] = '!'
			}
			es[i].Index, es[i].Kind = 0, "scribbled"
		}
	}
	first := entries("w", 1, 20)
	_, err := j.Append(ctx, "w", 0, first)
	require.NoError(t, err)
	scribble(first)
	// A resend that overlaps and extends, and one that conflicts, each
	// scribbled on once answered.
	more := entries("w", 11, 20)
	n, err := j.Append(ctx, "w", 0, more)
	require.NoError(t, err)
	require.Equal(t, 10, n)
	scribble(more)
	bad := entries("w", 25, 2)
	bad[0].Payload = []byte("different")
	_, err = j.Append(ctx, "w", 0, bad)
	require.ErrorIs(t, err, oplog.ErrConflict)
	scribble(bad)

	same(t, entries("w", 1, 30), readAll(t, j, "w"))
	n, err = j.Append(ctx, "w", 0, entries("w", 1, 30))
	require.NoError(t, err, "the journal compares a resend with what it stored, not with the scribbled entries")
	assert.Zero(t, n)
}

func testStartIndex(t *testing.T, b Backend) {
	j := b.New(t)
	_, err := j.Append(ctx, "mid", 1000, entries("mid", 1000, 3))
	require.NoError(t, err)
	head, err := j.Head(ctx, "mid")
	require.NoError(t, err)
	assert.Equal(t, uint64(1000), head.Next)
	same(t, entries("mid", 1000, 3), readAll(t, j, "mid"))

	// Later appends name the same start, or none; another is a conflict.
	_, err = j.Append(ctx, "mid", 1000, entries("mid", 1003, 1))
	require.NoError(t, err)
	_, err = j.Append(ctx, "mid", 0, entries("mid", 1004, 1))
	require.NoError(t, err)
	_, err = j.Append(ctx, "mid", 7, entries("mid", 1005, 1))
	require.ErrorIs(t, err, oplog.ErrConflict)
	// Before the start: a conflict, not a gap.
	_, err = j.Append(ctx, "mid", 0, entries("mid", 999, 2))
	require.ErrorIs(t, err, oplog.ErrConflict)
	same(t, entries("mid", 1000, 5), readAll(t, j, "mid"))
}

func testFirstAppendElsewhere(t *testing.T, b Backend) {
	j := b.New(t)
	for _, c := range []struct {
		start, first uint64
		want         uint64
	}{{0, 2, 1}, {0, 0, 1}, {5, 6, 5}, {5, 4, 5}} {
		_, err := j.Append(ctx, "late", c.start, entries("late", c.first, 2))
		var oe *oplog.OrderError
		require.ErrorAs(t, err, &oe, "start %d, first %d", c.start, c.first)
		assert.Equal(t, c.want, oe.Expected)
	}
	_, err := j.Head(ctx, "late")
	assert.ErrorIs(t, err, oplog.ErrNoJournal, "a refused first append leaves no journal")
	ws, err := j.Workers(ctx)
	require.NoError(t, err)
	assert.NotContains(t, ws, "late")
}

func testGap(t *testing.T, b Backend) {
	j := b.New(t)
	_, err := j.Append(ctx, "g", 0, entries("g", 1, 3))
	require.NoError(t, err)
	_, err = j.Append(ctx, "g", 0, entries("g", 5, 1))
	var oe *oplog.OrderError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, uint64(4), oe.Expected)
	assert.Equal(t, uint64(5), oe.Got)
	// Indexes that do not run on within one append.
	bad := append(entries("g", 4, 2), entries("g", 7, 1)...)
	_, err = j.Append(ctx, "g", 0, bad)
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, uint64(6), oe.Expected)
	same(t, entries("g", 1, 3), readAll(t, j, "g"))
}

func testResend(t *testing.T, b Backend) {
	j := b.New(t)
	_, err := j.Append(ctx, "r", 0, entries("r", 1, 10))
	require.NoError(t, err)

	n, err := j.Append(ctx, "r", 0, entries("r", 1, 10))
	require.NoError(t, err, "an identical resend")
	assert.Zero(t, n)
	n, err = j.Append(ctx, "r", 0, entries("r", 4, 3))
	require.NoError(t, err, "an identical resend of the middle")
	assert.Zero(t, n)

	zero := entries("r", 9, 2)
	for i := range zero {
		zero[i].Timestamp = time.Time{}
	}
	n, err = j.Append(ctx, "r", 0, zero)
	require.NoError(t, err, "a zero timestamp matches the one held")
	assert.Zero(t, n)

	n, err = j.Append(ctx, "r", 0, entries("r", 8, 6))
	require.NoError(t, err, "overlap and extend")
	assert.Equal(t, 3, n)

	for _, c := range []struct {
		field  string
		change func(*contract.Entry)
	}{
		{"kind", func(e *contract.Entry) { e.Kind = "other" }},
		{"timestamp", func(e *contract.Entry) { e.Timestamp = e.Timestamp.Add(time.Nanosecond) }},
		{"payload", func(e *contract.Entry) { e.Payload = append(e.Payload, '!') }},
	} {
		es := entries("r", 5, 12)
		c.change(&es[2])
		_, err := j.Append(ctx, "r", 0, es)
		var ce *oplog.ConflictError
		require.ErrorAs(t, err, &ce, c.field)
		assert.Equal(t, uint64(7), ce.Index)
		assert.Equal(t, c.field, ce.Field)
	}
	same(t, entries("r", 1, 13), readAll(t, j, "r"))

	// A new entry with no timestamp gets one.
	es := entries("r", 14, 1)
	es[0].Timestamp = time.Time{}
	before := time.Now()
	_, err = j.Append(ctx, "r", 0, es)
	require.NoError(t, err)
	got := readAll(t, j, "r")
	assert.False(t, got[len(got)-1].Timestamp.Before(before.Add(-time.Second)), "stamped at the append")
}

func testEntryChecks(t *testing.T, b Backend) {
	j := b.New(t)
	cases := map[string]contract.Entry{
		"another worker": {WorkerID: "other", Index: 1, Kind: "k"},
		"kind too long":  {Index: 1, Kind: string(bytes.Repeat([]byte{'k'}, oplog.MaxKind+1))},
		"payload":        {Index: 1, Kind: "k", Payload: make([]byte, oplog.MaxPayload+1)},
		"timestamp":      {Index: 1, Kind: "k", Timestamp: oplog.MaxTimestamp.Add(time.Hour)},
	}
	for name, e := range cases {
		_, err := j.Append(ctx, "c", 0, []contract.Entry{e})
		assert.ErrorIs(t, err, oplog.ErrEntry, name)
	}
	_, err := j.Head(ctx, "c")
	assert.ErrorIs(t, err, oplog.ErrNoJournal)
	// The largest allowed entry goes in and comes out whole.
	big := contract.Entry{Index: 1, Kind: string(bytes.Repeat([]byte{'k'}, oplog.MaxKind)), Payload: bytes.Repeat([]byte{7}, oplog.MaxPayload),
		Timestamp: oplog.MaxTimestamp}
	_, err = j.Append(ctx, "c", 0, []contract.Entry{big})
	require.NoError(t, err)
	big.WorkerID = "c"
	same(t, []contract.Entry{big}, readAll(t, j, "c"))
}

func testReadBounds(t *testing.T, b Backend) {
	j := b.New(t)
	es := entries("b", 1, 50)
	es[10].Payload = bytes.Repeat([]byte{1}, 64<<10)
	_, err := j.Append(ctx, "b", 0, es)
	require.NoError(t, err)
	head, err := j.Head(ctx, "b")
	require.NoError(t, err)
	got, _, err := j.Read(ctx, "b", head, 7, 1<<20)
	require.NoError(t, err)
	assert.Len(t, got, 7, "limit")
	got, at, err := j.Read(ctx, "b", head, 100, 1)
	require.NoError(t, err)
	assert.Len(t, got, 1, "at least one entry, whatever maxBytes")
	for at.Next <= 10 {
		_, at, err = j.Read(ctx, "b", at, 1, 1<<20)
		require.NoError(t, err)
	}
	got, _, err = j.Read(ctx, "b", at, 100, 1024)
	require.NoError(t, err)
	require.Len(t, got, 1, "an entry larger than maxBytes comes alone")
	assert.Len(t, got[0].Payload, 64<<10)
	same(t, es, withWorker(readAll(t, j, "b"), "b"))
}

func withWorker(es []contract.Entry, w string) []contract.Entry {
	for i := range es {
		es[i].WorkerID = w
	}
	return es
}

func testManyWorkers(t *testing.T, b Backend) {
	j := b.New(t)
	var want []string
	ids := []string{"a", "a.b", "a.b.c", "a-b", "a_b", "A", "0", "x.y", "x", "y"}
	for i := range 2000 {
		ids = append(ids, fmt.Sprintf("worker-%04d.shard.%d", i, i%7))
	}
	for _, id := range ids {
		_, err := j.Append(ctx, id, 0, entries(id, 1, 2))
		require.NoError(t, err, id)
		want = append(want, id)
	}
	got, err := j.Workers(ctx)
	require.NoError(t, err)
	slices.Sort(got)
	slices.Sort(want)
	assert.Equal(t, want, got)
	for _, id := range []string{"a", "a.b", "a.b.c", "x.y", "worker-1999.shard.4"} {
		same(t, entries(id, 1, 2), readAll(t, j, id)) // no two workers share a journal
	}
}

func testWatch(t *testing.T, b Backend) {
	j := b.New(t)
	_, err := j.Append(ctx, "before", 0, entries("before", 1, 1))
	require.NoError(t, err)
	type notice struct {
		worker string
		n      oplog.Notice
	}
	seen := make(chan notice, 1024)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- j.Watch(wctx, func(w string, n oplog.Notice) {
			select {
			case seen <- notice{w, n}:
			default:
			}
		})
	}()
	waitFor := func(want notice) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case got := <-seen:
				if got == want || (want.n == oplog.Listed && got.worker == want.worker) {
					return
				}
			case <-deadline:
				t.Fatalf("no notice %+v", want)
			}
		}
	}
	waitFor(notice{"before", oplog.Listed})
	// The watch may start after the listing: append until one is seen.
	for i := uint64(1); ; i++ {
		_, err := j.Append(ctx, "after", 0, entries("after", i, 1))
		require.NoError(t, err)
		select {
		case got := <-seen:
			if got.worker == "after" && got.n == oplog.Changed {
				goto appended
			}
		case <-time.After(time.Second):
		}
		require.Less(t, i, uint64(30), "no notice of appends")
	}
appended:
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Watch did not end with its context")
	}
}

func testCursors(t *testing.T, b Backend) {
	j := b.New(t)
	cs, err := j.Cursors("proc")
	require.NoError(t, err)
	c, err := cs.Get(ctx, "w.1")
	require.NoError(t, err)
	assert.Equal(t, oplog.Cursor{Worker: "w.1"}, c)

	c1 := oplog.Cursor{Worker: "w.1", Acked: 3, Offset: 99, InFlight: 8}
	require.NoError(t, cs.Put(ctx, c, c1))
	got, err := cs.Get(ctx, "w.1")
	require.NoError(t, err)
	assert.Equal(t, c1, got)

	// A stale expectation changes nothing.
	err = cs.Put(ctx, c, oplog.Cursor{Worker: "w.1", Acked: 1, Offset: 5, InFlight: 1})
	require.ErrorIs(t, err, oplog.ErrCursorMoved)
	got, err = cs.Get(ctx, "w.1")
	require.NoError(t, err)
	assert.Equal(t, c1, got)

	// Workers and processors have cursors of their own.
	other, err := cs.Get(ctx, "w")
	require.NoError(t, err)
	assert.Equal(t, oplog.Cursor{Worker: "w"}, other)
	cs2, err := j.Cursors("proc2")
	require.NoError(t, err)
	got, err = cs2.Get(ctx, "w.1")
	require.NoError(t, err)
	assert.Equal(t, oplog.Cursor{Worker: "w.1"}, got)

	// Many racing puts from one expectation: exactly one wins.
	var wins int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			next := oplog.Cursor{Worker: "w.1", Acked: 10 + uint64(i), Offset: 100, InFlight: 40}
			err := cs.Put(ctx, c1, next)
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
				return
			}
			assert.ErrorIs(t, err, oplog.ErrCursorMoved)
		})
	}
	wg.Wait()
	assert.Equal(t, 1, wins)
}

func testConcurrentResends(t *testing.T, b Backend) {
	j := b.New(t)
	const senders, per, batch = 8, 40, 5
	want := entries("cc", 1, per*batch)
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			// Every sender sends everything, in order, each batch until it
			// is in: as at-least-once senders racing for one worker do.
			for k := 0; k < per; {
				_, err := j.Append(ctx, "cc", 0, slices.Clone(want[k*batch:(k+1)*batch]))
				var oe *oplog.OrderError
				if errors.As(err, &oe) {
					k = int(oe.Expected-1) / batch
					continue
				}
				if !assert.NoError(t, err) {
					return
				}
				k++
			}
		})
	}
	wg.Wait()
	same(t, want, readAll(t, j, "cc"))
}

func testReopen(t *testing.T, b Backend) {
	if b.Reopen == nil {
		t.Skip("the backend's journals do not outlive it")
	}
	j := b.New(t)
	_, err := j.Append(ctx, "p", 0, entries("p", 1, 5))
	require.NoError(t, err)
	_, err = j.Append(ctx, "q", 40, entries("q", 40, 2))
	require.NoError(t, err)
	cs, err := j.Cursors("proc")
	require.NoError(t, err)
	c := oplog.Cursor{Worker: "p", Acked: 2, Offset: 1, InFlight: 4}
	require.NoError(t, cs.Put(ctx, oplog.Cursor{Worker: "p"}, c))

	j = b.Reopen(t, j)
	same(t, entries("p", 1, 5), readAll(t, j, "p"))
	same(t, entries("q", 40, 2), readAll(t, j, "q"))
	n, err := j.Append(ctx, "p", 0, entries("p", 3, 4))
	require.NoError(t, err, "a resend after the restart")
	assert.Equal(t, 1, n)
	cs, err = j.Cursors("proc")
	require.NoError(t, err)
	got, err := cs.Get(ctx, "p")
	require.NoError(t, err)
	assert.Equal(t, c, got)
}
