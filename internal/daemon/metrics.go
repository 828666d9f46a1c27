package daemon

import (
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/loader"
)

// newMetrics returns the registry /metrics serves: the Go runtime and
// process collectors, soplug_build_info, and soplug_plugin_active with one
// series per selected plugin.
func newMetrics(sel *loader.Selection) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "soplug_build_info",
		Help: "The runner's build: its module version, Go version and contract ABI. Always 1."},
		[]string{"version", "goversion", "contract_abi"})
	ver := "(unknown)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		ver = bi.Main.Version
	}
	build.WithLabelValues(ver, runtime.Version(), strconv.Itoa(contract.ABIVersion)).Set(1)

	active := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "soplug_plugin_active",
		Help: "The plugin versions this process selected and serves, one series each. Always 1."},
		[]string{"plugin", "version", "kind"})
	for _, c := range sel.Selected() {
		active.WithLabelValues(c.Name, c.Version.String(), string(c.Kind)).Set(1)
	}
	reg.MustRegister(build, active)
	for _, c := range sel.Selected() {
		if c.ProcessStatus() == nil {
			continue
		}
		labels := prometheus.Labels{"plugin": c.Name, "version": c.Version.String()}
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "soplug_plugin_process_restarts", ConstLabels: labels,
				Help: "Times this out-of-process plugin's process was started again after it died."},
				func() float64 { return float64(c.ProcessStatus().Restarts) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "soplug_plugin_process_up", ConstLabels: labels,
				Help: "1 while this out-of-process plugin's process is running, 0 while it is being started again."},
				func() float64 {
					if c.ProcessStatus().PID > 0 {
						return 1
					}
					return 0
				}))
	}
	return reg
}

// metricsHandler serves reg and the plugin processes' series in the
// Prometheus text format. A family that does not merge (a plugin's series
// that clash with the daemon's own) is left out, not the whole scrape.
func metricsHandler(reg *prometheus.Registry, plugins prometheus.Gatherer) http.Handler {
	// The plugins first: a failed scrape of one is counted in reg, and
	// shows in the same scrape.
	return promhttp.HandlerFor(prometheus.Gatherers{plugins, reg},
		promhttp.HandlerOpts{Registry: reg, ErrorHandling: promhttp.ContinueOnError})
}
