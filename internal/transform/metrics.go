package transform

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's Prometheus metrics, labelled by plugin name and
// version. Every plugin call is one request of that plugin; a request that
// fails before any plugin runs (400, 413, 503) is counted against the first
// plugin of its route, and one with no route (404) against plugin "".
type metrics struct {
	requests  *prometheus.CounterVec   // plugin, version, code
	errors    *prometheus.CounterVec   // plugin, version, code
	panics    *prometheus.CounterVec   // plugin, version
	abandon   *prometheus.CounterVec   // plugin, version
	running   *prometheus.GaugeVec     // plugin, version: abandoned calls still running
	bytesIn   *prometheus.CounterVec   // plugin, version
	bytesOut  *prometheus.CounterVec   // plugin, version
	durations *prometheus.HistogramVec // plugin, version
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	pv := []string{"plugin", "version"}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "soplug_transform_requests_total",
			Help: "Transform requests, by plugin, version and HTTP status."}, append(pv, "code")),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "soplug_transform_errors_total",
			Help: "Transform requests answered with an error status, by plugin, version and status."}, append(pv, "code")),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "soplug_transform_panics_total",
			Help: "Transform calls that panicked (recovered; answered 500)."}, pv),
		abandon: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "soplug_transform_abandoned_total",
			Help: "Transform calls still running when their request's deadline passed (answered 504)."}, pv),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "soplug_transform_abandoned_running",
			Help: "Abandoned Transform calls that have not returned yet."}, pv),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "soplug_transform_received_bytes_total",
			Help: "Bytes handed to Transform."}, pv),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "soplug_transform_sent_bytes_total",
			Help: "Bytes Transform returned."}, pv),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "soplug_transform_duration_seconds",
			Help:    "How long Transform calls took.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, pv),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.errors, m.panics, m.abandon, m.running, m.bytesIn, m.bytesOut, m.durations} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func labels(p *Plugin) (string, string) {
	if p == nil {
		return "", ""
	}
	return p.Name, p.Version
}

func (m *metrics) count(p *Plugin, code int) {
	name, ver := labels(p)
	c := strconv.Itoa(code)
	m.requests.WithLabelValues(name, ver, c).Inc()
	if code >= 400 {
		m.errors.WithLabelValues(name, ver, c).Inc()
	}
}

func (m *metrics) observe(p *Plugin, in, out int, took time.Duration) {
	m.bytesIn.WithLabelValues(p.Name, p.Version).Add(float64(in))
	m.bytesOut.WithLabelValues(p.Name, p.Version).Add(float64(out))
	m.durations.WithLabelValues(p.Name, p.Version).Observe(took.Seconds())
}

// initCodes are the statuses the service answers, whose request and
// error series exist from the start.
var initCodes = []int{http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed,
	http.StatusRequestTimeout, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity, http.StatusInternalServerError,
	http.StatusServiceUnavailable, http.StatusGatewayTimeout}

// init creates p's series at zero (requests and errors for each status
// the service answers), so that alerts on rate() or absent() work before
// the first event.
func (m *metrics) init(p *Plugin) {
	if p.Transformer == nil {
		return
	}
	for _, code := range initCodes {
		c := strconv.Itoa(code)
		m.requests.WithLabelValues(p.Name, p.Version, c)
		if code >= 400 {
			m.errors.WithLabelValues(p.Name, p.Version, c)
		}
	}
	m.panics.WithLabelValues(p.Name, p.Version)
	m.abandon.WithLabelValues(p.Name, p.Version)
	m.running.WithLabelValues(p.Name, p.Version)
	m.bytesIn.WithLabelValues(p.Name, p.Version)
	m.bytesOut.WithLabelValues(p.Name, p.Version)
	m.durations.WithLabelValues(p.Name, p.Version)
}

func (m *metrics) panicked(p *Plugin) { m.panics.WithLabelValues(p.Name, p.Version).Inc() }

func (m *metrics) abandoned(p *Plugin) {
	m.abandon.WithLabelValues(p.Name, p.Version).Inc()
	m.running.WithLabelValues(p.Name, p.Version).Inc()
}

func (m *metrics) finished(p *Plugin) { m.running.WithLabelValues(p.Name, p.Version).Dec() }
