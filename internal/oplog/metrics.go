package oplog

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the oplog's Prometheus metrics, shared by every Deliverer of
// a process. Create them with NewMetrics.
type Metrics struct {
	entries     *prometheus.CounterVec   // processor, version
	redelivered *prometheus.CounterVec   // processor, version
	batches     *prometheus.CounterVec   // processor, version
	failures    *prometheus.CounterVec   // processor, version
	commits     *prometheus.HistogramVec // processor
	states      *prometheus.GaugeVec     // processor, state
	parked      *prometheus.GaugeVec     // processor, worker
	appended    prometheus.Counter
	leases      *prometheus.CounterVec // processor, event
	unavailable prometheus.Counter
}

// NewMetrics registers the oplog metrics with reg (nil: kept unexported).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	pv := []string{"processor", "version"}
	m := &Metrics{
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "soplug_oplog_delivered_entries_total",
			Help: "Oplog entries the processor acknowledged."}, pv),
		redelivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "soplug_oplog_redelivered_entries_total",
			Help: "Acknowledged entries that were delivered with Batch.Redelivery set (in flight at an unclean stop)."}, pv),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "soplug_oplog_batches_total",
			Help: "Batches the processor acknowledged."}, pv),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "soplug_oplog_batch_failures_total",
			Help: "Process calls that returned an error or panicked (the batch is retried)."}, pv),
		commits: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "soplug_oplog_cursor_commit_seconds",
			Help: "Durable cursor writes (write, fsync, rename, fsync of the folder).", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14)},
			[]string{"processor"}),
		states: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "soplug_oplog_workers",
			Help: "Workers by delivery state."}, []string{"processor", "state"}),
		parked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "soplug_oplog_worker_parked",
			Help: "1 for each worker parked after repeated failures, until it is activated."}, []string{"processor", "worker"}),
		appended: prometheus.NewCounter(prometheus.CounterOpts{Name: "soplug_oplog_appended_entries_total",
			Help: "Entries appended through POST /v1/workers/{id}/oplog."}),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "soplug_oplog_lease_events_total",
			Help: "Workers' leases in a journal shared by runners: taken (from another runner), lost (taken by another), refused (held by another)."},
			[]string{"processor", "event"}),
		unavailable: prometheus.NewCounter(prometheus.CounterOpts{Name: "soplug_oplog_journal_unavailable_total",
			Help: "Appends answered 503 because the journal (its cluster) did not answer."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.entries, m.redelivered, m.batches, m.failures, m.commits, m.states, m.parked, m.appended, m.leases, m.unavailable} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// start creates the series of processor name at version at zero, so that
// they are on /metrics from the start: an alert on rate() or absent()
// works before the first event. soplug_oplog_worker_parked has a series
// per parked worker only (one per worker would be one per oplog, unbounded);
// soplug_oplog_workers{state="parked"} is its count from the start.
func (m *Metrics) start(name, version string) {
	for _, c := range []*prometheus.CounterVec{m.entries, m.redelivered, m.batches, m.failures} {
		c.WithLabelValues(name, version)
	}
	m.commits.WithLabelValues(name)
	for _, s := range states {
		m.states.WithLabelValues(name, string(s))
	}
	for _, e := range []string{"taken", "lost", "refused"} {
		m.leases.WithLabelValues(name, e)
	}
}

func (m *Metrics) delivered(name, version string, n int, redelivery bool) {
	m.entries.WithLabelValues(name, version).Add(float64(n))
	m.batches.WithLabelValues(name, version).Inc()
	if redelivery {
		m.redelivered.WithLabelValues(name, version).Add(float64(n))
	}
}

func (m *Metrics) failed(name, version string) { m.failures.WithLabelValues(name, version).Inc() }

func (m *Metrics) commit(name string, took time.Duration) {
	m.commits.WithLabelValues(name).Observe(took.Seconds())
}

// forget takes a worker that is no more out of the count of its state.
func (m *Metrics) forget(name string, s State) {
	m.states.WithLabelValues(name, string(s)).Dec()
}

// state moves a worker from one state to another.
func (m *Metrics) state(name, worker string, from, to State) {
	if from != "" {
		m.states.WithLabelValues(name, string(from)).Dec()
	}
	m.states.WithLabelValues(name, string(to)).Inc()
	switch {
	case to == StateParked:
		m.parked.WithLabelValues(name, worker).Set(1)
	case from == StateParked:
		m.parked.DeleteLabelValues(name, worker)
	}
}

func (m *Metrics) lease(name, event string) { m.leases.WithLabelValues(name, event).Inc() }
