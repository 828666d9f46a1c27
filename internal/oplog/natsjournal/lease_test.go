package natsjournal_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/natsjournal"
	"github.com/soplug/soplug/internal/oplog/natsjournal/natstest"
)

// delivery is one entry as a processor was handed it.
type delivery struct {
	runner     string
	index      uint64
	redelivery bool
}

// fleet records what the processors of every runner were handed.
type fleet struct {
	mu   sync.Mutex
	seen map[string][]delivery // worker → deliveries, in order
}

// proc is one runner's processor; block, when set, is asked before each
// batch and may hold it.
type proc struct {
	f      *fleet
	runner string
	block  func(b contract.Batch)
}

func (*proc) Version() string                             { return "1.0.0" }
func (*proc) IsAcceptable() bool                          { return true }
func (*proc) Init(context.Context, contract.Config) error { return nil }
func (*proc) Close(context.Context) error                 { return nil }
func (p *proc) Process(_ context.Context, b contract.Batch) error {
	if p.block != nil {
		p.block(b)
	}
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	for _, e := range b.Entries {
		p.f.seen[b.WorkerID] = append(p.f.seen[b.WorkerID], delivery{p.runner, e.Index, b.Redelivery})
	}
	return nil
}

// check asserts that every index 1..n of worker was delivered, and none
// twice without the second flagged; it returns the deliveries.
func (f *fleet) check(t *testing.T, worker string, n uint64) []delivery {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	plain := map[uint64]int{}
	all := map[uint64]bool{}
	for _, d := range f.seen[worker] {
		all[d.index] = true
		if !d.redelivery {
			plain[d.index]++
		}
	}
	for i := uint64(1); i <= n; i++ {
		assert.True(t, all[i], "%s: entry %d never delivered", worker, i)
		assert.LessOrEqual(t, plain[i], 1, "%s: entry %d delivered twice unflagged", worker, i)
	}
	return append([]delivery(nil), f.seen[worker]...)
}

func (f *fleet) count(worker string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[uint64]bool{}
	for _, d := range f.seen[worker] {
		seen[d.index] = true
	}
	return len(seen)
}

// runner starts a Deliverer of p on its own connection and Journal, named
// owner, with leases of ttl; the returned function stops it.
func runner(t *testing.T, srv *natstest.Server, owner string, ttl time.Duration, p *proc) (*natsjournal.Journal, func()) {
	t.Helper()
	j, end, _ := runnerD(t, srv, owner, ttl, p)
	return j, end
}

// runnerD is runner, with the Deliverer.
func runnerD(t *testing.T, srv *natstest.Server, owner string, ttl time.Duration, p *proc) (*natsjournal.Journal, func(), *oplog.Deliverer) {
	t.Helper()
	j, err := natsjournal.New(context.Background(), srv.Connect(t), natsjournal.Config{Owner: owner, LeaseTTL: ttl})
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	m, err := oplog.NewMetrics(reg)
	require.NoError(t, err)
	d, err := oplog.NewDeliverer(oplog.Config{Journal: j, BatchSize: 10, Parallel: 2, Metrics: m}, "fleet", "1.0.0", p)
	require.NoError(t, err)
	stop, cancel := context.WithCancel(context.Background())
	procCtx, endProc := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(stop, procCtx) }()
	var once sync.Once
	end := func() {
		once.Do(func() {
			cancel()
			endProc()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(end)
	regs[owner] = reg
	return j, end, d
}

// regs are the runners' metrics, by owner.
var regs = map[string]*prometheus.Registry{}

// leaseEvents returns the count of a runner's lease events.
func leaseEvents(t *testing.T, owner, event string) float64 {
	t.Helper()
	mfs, err := regs[owner].Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "soplug_oplog_lease_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "event" && l.GetValue() == event {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func appendN(t *testing.T, j *natsjournal.Journal, worker string, from, n int) {
	t.Helper()
	es := make([]contract.Entry, n)
	for i := range es {
		es[i] = contract.Entry{Index: uint64(from + i), Kind: "k", Payload: []byte(worker)}
	}
	_, err := j.Append(context.Background(), worker, 0, es)
	require.NoError(t, err)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "timed out: %s", what)
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTwoRunnersShareWorkers: two runners on one stream, each watching
// every worker, deliver twenty workers between them: every entry once,
// none flagged (nothing crashed), each worker's batches from one runner at
// a time, its lease passing between them while it is idle.
func TestTwoRunnersShareWorkers(t *testing.T) {
	srv := natstest.Start(t)
	f := &fleet{seen: map[string][]delivery{}}
	ja, _ := runner(t, srv, "a", 500*time.Millisecond, &proc{f: f, runner: "a"})
	jb, _ := runner(t, srv, "b", 500*time.Millisecond, &proc{f: f, runner: "b"})
	const workers = 20
	for round := range 3 {
		for w := range workers {
			j := ja
			if w%2 == 1 {
				j = jb
			}
			appendN(t, j, "w."+strconv.Itoa(w), round*30+1, 30)
		}
		waitFor(t, "delivered", func() bool {
			for w := range workers {
				if f.count("w."+strconv.Itoa(w)) < (round+1)*30 {
					return false
				}
			}
			return true
		})
		time.Sleep(600 * time.Millisecond) // the leases lapse while idle
	}
	runners := map[string]bool{}
	for w := range workers {
		for _, d := range f.check(t, "w."+strconv.Itoa(w), 90) {
			assert.False(t, d.redelivery, "nothing crashed")
			runners[d.runner] = true
		}
	}
	t.Logf("runners that delivered: %v", runners)
}

// TestRunnerLostMidBatch: runner a holds a worker's batch and stops
// answering (as if killed, or cut off): once its lease lapses, runner b
// takes the worker and delivers that batch again, flagged, and the rest;
// when a's processor finally returns, a records nothing, and nothing is
// delivered twice unflagged.
func TestRunnerLostMidBatch(t *testing.T) {
	srv := natstest.Start(t)
	f := &fleet{seen: map[string][]delivery{}}
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	pa := &proc{f: f, runner: "a", block: func(contract.Batch) {
		once.Do(func() { close(held); <-release })
	}}
	ja, _, da := runnerD(t, srv, "a", time.Second, pa)
	appendN(t, ja, "x", 1, 25)
	<-held // a has the first batch, and its lease
	start := time.Now()
	_, _ = runner(t, srv, "b", time.Second, &proc{f: f, runner: "b"})
	waitFor(t, "b delivers x", func() bool { return f.count("x") == 25 })
	t.Logf("b took x over %v after a stopped answering (lease 1 s)", time.Since(start))
	close(release)
	waitFor(t, "a sees x leased to b", func() bool {
		for _, st := range da.Status() {
			if st.Worker == "x" {
				return st.State == oplog.StateLeased && st.Owner == "b" && !st.LeaseUntil.IsZero()
			}
		}
		return false
	})
	ds := f.check(t, "x", 25)
	require.NotEmpty(t, ds)
	var flagged bool
	for _, d := range ds {
		if d.runner == "b" && d.index == 1 {
			flagged = d.redelivery
		}
	}
	assert.True(t, flagged, "b redelivers a's batch flagged")
	assert.Equal(t, 1.0, leaseEvents(t, "a", "lost"), "a lost x")
	assert.GreaterOrEqual(t, leaseEvents(t, "b", "taken"), 1.0, "b took x")
	appendN(t, ja, "x", 26, 5) // new entries: b holds the worker, a sees it leased
	waitFor(t, "the new entries", func() bool { return f.count("x") == 30 })
	f.check(t, "x", 30)
}

// TestPauseIsFleetWide: a pause made through one runner holds on every
// runner on the stream, and a resume made through another wakes them.
func TestPauseIsFleetWide(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f := &fleet{seen: map[string][]delivery{}}
	var pauses []*oplog.PauseSet
	var journals []*natsjournal.Journal
	for _, owner := range []string{"a", "b"} {
		j, err := natsjournal.New(ctx, srv.Connect(t), natsjournal.Config{Owner: owner, LeaseTTL: 300 * time.Millisecond})
		require.NoError(t, err)
		ps, err := oplog.SharedPauseSet(ctx, j)
		require.NoError(t, err)
		d, err := oplog.NewDeliverer(oplog.Config{Journal: j, BatchSize: 10, Paused: ps}, "fleet", "1.0.0", &proc{f: f, runner: owner})
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx, context.Background()) }()
		t.Cleanup(func() { cancel(); <-done })
		pauses, journals = append(pauses, ps), append(journals, j)
	}
	require.NoError(t, pauses[0].Set("p.1", true))
	waitFor(t, "b sees the pause", func() bool { return pauses[1].Paused("p.1") })
	assert.Equal(t, []string{"p.1"}, pauses[1].List())
	appendN(t, journals[1], "p.1", 1, 20)
	appendN(t, journals[1], "q", 1, 5)
	waitFor(t, "the other worker", func() bool { return f.count("q") == 5 })
	time.Sleep(700 * time.Millisecond) // past a lease: neither runner delivers the paused worker
	assert.Zero(t, f.count("p.1"), "paused on both runners")
	require.NoError(t, pauses[1].Set("p.1", false)) // resumed through the other runner
	waitFor(t, "delivered once resumed", func() bool { return f.count("p.1") == 20 })
	f.check(t, "p.1", 20)
	assert.False(t, pauses[0].Paused("p.1"))
}
