package oplog_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/contract/serve"
	"github.com/soplug/soplug/internal/oplog"
)

// recorder is an OplogProcessor that records every delivery.
type recorder struct {
	mu    sync.Mutex
	seen  map[string][]uint64 // worker → indexes, in delivery order
	redel map[string][]uint64 // worker → indexes delivered with Redelivery
	// fail, when set, is asked before each batch; an error fails it.
	fail func(b contract.Batch) error
}

func newRecorder() *recorder {
	return &recorder{seen: map[string][]uint64{}, redel: map[string][]uint64{}}
}

func (*recorder) Version() string                             { return "1.0.0" }
func (*recorder) IsAcceptable() bool                          { return true }
func (*recorder) Init(context.Context, contract.Config) error { return nil }
func (*recorder) Close(context.Context) error                 { return nil }
func (r *recorder) Process(_ context.Context, b contract.Batch) error {
	if r.fail != nil {
		if err := r.fail(b); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, e := range b.Entries {
		if e.Index != b.FirstIndex+uint64(i) || e.WorkerID != b.WorkerID {
			panic(fmt.Sprintf("bad batch: entry %d has index %d worker %s", i, e.Index, e.WorkerID))
		}
		r.seen[b.WorkerID] = append(r.seen[b.WorkerID], e.Index)
		if b.Redelivery {
			r.redel[b.WorkerID] = append(r.redel[b.WorkerID], e.Index)
		}
	}
	return nil
}

func (r *recorder) count(worker string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen[worker])
}

// run starts a Deliverer of dir to p and returns a stop function that
// ends it and waits.
func run(t *testing.T, cfg oplog.Config, p contract.OplogProcessor) (*oplog.Deliverer, func()) {
	t.Helper()
	if cfg.Poll == 0 {
		cfg.Poll = 20 * time.Millisecond
	}
	d, err := oplog.NewDeliverer(cfg, "rec", "1.0.0", p)
	require.NoError(t, err)
	stop, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(stop, context.Background()) }()
	var once sync.Once
	end := func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(end)
	return d, end
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "timed out waiting: %s", what)
		time.Sleep(5 * time.Millisecond)
	}
}

func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func status(d *oplog.Deliverer, worker string) oplog.WorkerStatus {
	for _, s := range d.Status() {
		if s.Worker == worker {
			return s
		}
	}
	return oplog.WorkerStatus{}
}

// TestDeliverEverything: every entry of every worker, in order, once,
// including those written before delivery started and while it ran.
func TestDeliverEverything(t *testing.T) {
	dir := t.TempDir()
	for _, w := range []string{"a", "b", "c", "d", "e"} {
		appendN(t, dir, w, 500)
	}
	rec := newRecorder()
	_, stop := run(t, oplog.Config{Dir: dir, BatchSize: 64, Parallel: 2}, rec)
	appendN(t, dir, "a", 500)
	appendN(t, dir, "f", 10) // a worker that appears later
	want := map[string]int{"a": 1000, "b": 500, "c": 500, "d": 500, "e": 500, "f": 10}
	eventually(t, "all delivered", func() bool {
		for w, n := range want {
			if rec.count(w) < n {
				return false
			}
		}
		return true
	}) // every worker: with 2 delivering at a time, the last to finish may be any of them
	stop()
	for w, n := range want {
		assert.Equal(t, seq(1, uint64(n)), rec.seen[w], w)
	}
	assert.Empty(t, rec.redel)
}

// TestResumeFromCursor: a second Deliverer (a restart, or a new version of
// the processor) continues after the cursor; a new processor name starts
// from index 1.
func TestResumeFromCursor(t *testing.T) {
	dir := t.TempDir()
	appendN(t, dir, "w", 300)
	first := newRecorder()
	_, stop := run(t, oplog.Config{Dir: dir, BatchSize: 100}, first)
	eventually(t, "first 300", func() bool { return first.count("w") == 300 })
	stop()
	appendN(t, dir, "w", 50)

	second := newRecorder()
	_, stop = run(t, oplog.Config{Dir: dir, BatchSize: 100}, second)
	eventually(t, "the rest", func() bool { return second.count("w") == 50 })
	stop()
	assert.Equal(t, seq(301, 350), second.seen["w"], "nothing skipped, nothing acknowledged delivered again")
	assert.Empty(t, second.redel, "a clean stop leaves nothing in flight")

	other := newRecorder()
	_, stop = run(t, oplog.Config{Dir: dir, CursorDir: filepath.Join(t.TempDir(), "other")}, other)
	eventually(t, "all, for another processor", func() bool { return other.count("w") == 350 })
	stop()
	assert.Equal(t, seq(1, 350), other.seen["w"])
}

// stopInFlight delivers dir's oplogs with batches of 100 until the batch
// from index from is with the processor, then stops the delivery with it
// there, unacknowledged, as a drain deadline would; it returns what the
// processor acknowledged.
func stopInFlight(t *testing.T, dir string, from uint64) *recorder {
	t.Helper()
	first := newRecorder()
	release := make(chan struct{})
	got := make(chan struct{})
	first.fail = func(b contract.Batch) error {
		if b.FirstIndex == from {
			close(got)
			<-release
			return errors.New("stopped in the middle")
		}
		return nil
	}
	d, err := oplog.NewDeliverer(oplog.Config{Dir: dir, BatchSize: 100, Poll: 20 * time.Millisecond}, "rec", "1.0.0", first)
	require.NoError(t, err)
	stopCtx, stop := context.WithCancel(context.Background())
	procCtx, endProc := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(stopCtx, procCtx) }()
	<-got
	stop()
	endProc() // the drain deadline passes with the batch in flight
	close(release)
	require.NoError(t, <-done)
	return first
}

// TestRedeliveryOfBatchInFlight: a batch the processor got but did not
// acknowledge before the stop is delivered again, flagged, and only it.
func TestRedeliveryOfBatchInFlight(t *testing.T) {
	dir := t.TempDir()
	appendN(t, dir, "w", 250)
	first := stopInFlight(t, dir, 101)
	assert.Equal(t, seq(1, 100), first.seen["w"])

	second := newRecorder()
	_, end := run(t, oplog.Config{Dir: dir, BatchSize: 100}, second)
	eventually(t, "the rest", func() bool { return second.count("w") == 150 })
	end()
	assert.Equal(t, seq(101, 250), second.seen["w"])
	assert.Equal(t, seq(101, 200), second.redel["w"], "exactly the batch in flight is flagged")
}

// TestNoRedeliveryFlagForNewEntries: after an unclean stop the entries up
// to the in-flight mark that exist when delivery resumes come flagged; the
// ones appended after that, which no earlier run can have seen, come
// unflagged, though the mark covers them too.
func TestNoRedeliveryFlagForNewEntries(t *testing.T) {
	dir := t.TempDir()
	appendN(t, dir, "w", 150)
	stopInFlight(t, dir, 101) // 101..150 in flight; the mark says up to 200

	second := newRecorder()
	d2, end := run(t, oplog.Config{Dir: dir, BatchSize: 100}, second)
	defer end()
	eventually(t, "the batch in flight", func() bool { return second.count("w") == 50 })
	eventually(t, "idle", func() bool { return status(d2, "w").State == oplog.StateIdle })
	appendN(t, dir, "w", 30) // 151..180: under the mark, never seen by the first run
	eventually(t, "the new entries", func() bool { return second.count("w") == 80 })
	assert.Equal(t, seq(101, 180), second.seen["w"])
	assert.Equal(t, seq(101, 150), second.redel["w"], "only what existed at the restart is flagged")
}

// TestRetryAndPark: a failing batch is retried without holding up other
// workers; after ParkAfter failures the worker is parked, and Resume tries
// it again.
func TestRetryAndPark(t *testing.T) {
	dir := t.TempDir()
	appendN(t, dir, "bad", 10)
	appendN(t, dir, "good", 10)
	var mu sync.Mutex
	broken := true
	rec := newRecorder()
	rec.fail = func(b contract.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		if b.WorkerID == "bad" && broken {
			return errors.New("database unavailable")
		}
		return nil
	}
	d, stop := run(t, oplog.Config{Dir: dir, Parallel: 1, MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, ParkAfter: 5}, rec)
	eventually(t, "good delivered", func() bool { return rec.count("good") == 10 })
	eventually(t, "bad parked", func() bool { return status(d, "bad").State == oplog.StateParked })
	st := status(d, "bad")
	assert.Equal(t, 5, st.Failures)
	assert.Equal(t, "database unavailable", st.Error)
	assert.Equal(t, 0, rec.count("bad"))

	mu.Lock()
	broken = false
	mu.Unlock()
	d.Resume("bad")
	eventually(t, "bad delivered after resume", func() bool { return rec.count("bad") == 10 })
	stop()
	assert.Equal(t, seq(1, 10), rec.seen["bad"])
}

// TestPause: a paused worker's cursor holds while entries accumulate;
// resumed, it catches up. The pause outlasts a restart.
func TestPause(t *testing.T) {
	dir := t.TempDir()
	pauseFile := filepath.Join(t.TempDir(), "paused.json")
	pauses, err := oplog.OpenPauseSet(pauseFile)
	require.NoError(t, err)
	require.NoError(t, pauses.Set("w", true))
	appendN(t, dir, "w", 20)
	appendN(t, dir, "x", 20)
	rec := newRecorder()
	d, stop := run(t, oplog.Config{Dir: dir, Paused: pauses}, rec)
	eventually(t, "x delivered", func() bool { return rec.count("x") == 20 })
	eventually(t, "w paused", func() bool { return status(d, "w").State == oplog.StatePaused })
	appendN(t, dir, "w", 20)
	time.Sleep(100 * time.Millisecond) // five poll periods
	assert.Equal(t, 0, rec.count("w"), "nothing is delivered while paused")
	stop()

	reopened, err := oplog.OpenPauseSet(pauseFile)
	require.NoError(t, err)
	assert.Equal(t, []string{"w"}, reopened.List(), "the pause is on disk")
	d, stop = run(t, oplog.Config{Dir: dir, Paused: reopened}, rec)
	eventually(t, "w paused after a restart", func() bool { return status(d, "w").State == oplog.StatePaused })
	require.NoError(t, reopened.Set("w", false))
	eventually(t, "w caught up", func() bool { return rec.count("w") == 40 })
	stop()
	assert.Equal(t, seq(1, 40), rec.seen["w"])
}

// TestDeliveryWaitsForTornRecord: delivery stops before a record still
// being written, says so, and delivers it once it is whole.
func TestDeliveryWaitsForTornRecord(t *testing.T) {
	dir := t.TempDir()
	path := oplog.Path(dir, "w")
	whole, full := oneMore(t, dir, "w", 5)
	require.NoError(t, os.WriteFile(path, full[:len(full)-3], 0o644))

	rec := newRecorder()
	d, stop := run(t, oplog.Config{Dir: dir}, rec)
	eventually(t, "waiting for the writer", func() bool { return status(d, "w").State == oplog.StateTorn })
	assert.Equal(t, seq(1, 5), rec.seen["w"])
	assert.Contains(t, status(d, "w").Error, fmt.Sprintf("%s at offset %d", path, len(whole)))

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write(full[len(full)-3:])
	require.NoError(t, err)
	require.NoError(t, f.Close())
	eventually(t, "the finished record", func() bool { return rec.count("w") == 6 })
	stop()
}

// TestDeliveryBlockedByCorruptRecord: nothing at or after a corrupt record
// is delivered, and the status names it.
func TestDeliveryBlockedByCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	appendN(t, dir, "w", 5)
	path := oplog.Path(dir, "w")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	data[len(data)-1] ^= 0xff
	require.NoError(t, os.WriteFile(path, data, 0o644))
	rec := newRecorder()
	d, stop := run(t, oplog.Config{Dir: dir}, rec)
	eventually(t, "corrupt", func() bool { return status(d, "w").State == oplog.StateCorrupt })
	stop()
	assert.Equal(t, seq(1, 4), rec.seen["w"])
	assert.Contains(t, status(d, "w").Error, "checksum mismatch")
}

// TestRetryAfterPartialProcess: a batch whose Process call panicked, or
// whose processor's process died during the call, may have been applied in
// part: every later try of it is flagged as a redelivery. A batch the
// processor refused with an error is retried unflagged.
func TestRetryAfterPartialProcess(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fail    func() error
		flagged bool
	}{
		{"refused", func() error { return errors.New("database unavailable") }, false},
		{"panicked", func() error { panic("half-way") }, true},
		{"process died", func() error {
			return &serve.UnavailableError{Err: errors.New("connection reset"), Sent: true}
		}, true},
		{"process not running", func() error {
			return &serve.UnavailableError{Err: errors.New("being restarted")}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			appendN(t, dir, "w", 10)
			rec := newRecorder()
			var mu sync.Mutex
			tries := 0
			rec.fail = func(b contract.Batch) error {
				mu.Lock()
				tries++
				first := tries <= 2
				mu.Unlock()
				if first {
					return tc.fail()
				}
				return nil
			}
			_, stop := run(t, oplog.Config{Dir: dir, Parallel: 1, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}, rec)
			eventually(t, "delivered", func() bool { return rec.count("w") == 10 })
			stop()
			assert.Equal(t, seq(1, 10), rec.seen["w"], "each entry acknowledged once")
			if tc.flagged {
				assert.Equal(t, seq(1, 10), rec.redel["w"])
			} else {
				assert.Empty(t, rec.redel["w"])
			}
		})
	}
}

// TestIdleWorkersCostNoGoroutine: once 1000 workers are delivered and
// idle, the delivery keeps no goroutine for any of them; an append to one
// wakes it alone, and it is delivered.
func TestIdleWorkersCostNoGoroutine(t *testing.T) {
	const workers = 1000
	dir := t.TempDir()
	for i := range workers {
		appendN(t, dir, fmt.Sprintf("w%04d", i), 2)
	}
	base := runtime.NumGoroutine()
	rec := newRecorder()
	d, stop := run(t, oplog.Config{Dir: dir, CursorDir: t.TempDir()}, rec)
	defer stop()
	eventually(t, "every worker delivered and idle", func() bool {
		for _, st := range d.Status() {
			if st.State != oplog.StateIdle || st.Acked != 2 {
				return false
			}
		}
		return len(d.Status()) == workers
	})
	eventually(t, "their goroutines ended", func() bool { return runtime.NumGoroutine() <= base+20 })
	w, err := oplog.OpenWriter(dir, "w0777")
	require.NoError(t, err)
	require.NoError(t, w.Append(entries("w0777", 3, 1)...))
	require.NoError(t, w.Close())
	eventually(t, "the appended entry delivered", func() bool { return rec.count("w0777") == 3 })
	eventually(t, "and its goroutine ended", func() bool { return runtime.NumGoroutine() <= base+20 })
	assert.Equal(t, 2, rec.count("w0001"), "the other workers were not delivered again")
}

// TestStuckProcess: a Process call that runs past HangAfter is reported by
// Stuck, naming the processor and the worker, until it returns; with a
// negative HangAfter never; other workers go on meanwhile.
func TestStuckProcess(t *testing.T) {
	for _, tc := range []struct {
		name      string
		hangAfter time.Duration
		reported  bool
	}{{"past HangAfter", 50 * time.Millisecond, true}, {"never", -1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			appendN(t, dir, "stuck", 3)
			appendN(t, dir, "fine", 3)
			release := make(chan struct{})
			rec := newRecorder()
			rec.fail = func(b contract.Batch) error {
				if b.WorkerID == "stuck" {
					<-release
				}
				return nil
			}
			d, stop := run(t, oplog.Config{Dir: dir, Parallel: 2, HangAfter: tc.hangAfter}, rec)
			eventually(t, "the other worker delivered", func() bool { return rec.count("fine") == 3 })
			eventually(t, "the stuck call under way", func() bool { return status(d, "stuck").State == oplog.StateDelivering })
			time.Sleep(100 * time.Millisecond) // past HangAfter
			what, ok := d.Stuck()
			assert.Equal(t, tc.reported, ok, what)
			if tc.reported {
				assert.Contains(t, what, "a Process call into rec 1.0.0 for worker stuck has run")
				assert.Contains(t, what, "(--oplog-hang-after 50ms)")
			}
			close(release)
			eventually(t, "the stuck call returned", func() bool { return rec.count("stuck") == 3 })
			_, ok = d.Stuck()
			assert.False(t, ok, "nothing stuck once it returned")
			stop()
		})
	}
}
