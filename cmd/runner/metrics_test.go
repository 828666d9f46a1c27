package main

import (
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// documentedMetrics returns the series names the README documents: every
// `soplug_...` name in it but the build tag soplug_exec.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, m := range regexp.MustCompile("`(soplug_[a-z_]+)").FindAllStringSubmatch(readme(t), -1) {
		if m[1] != "soplug_exec" && !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	slices.Sort(out)
	return out
}

// TestMetricsFromTheStart scrapes /metrics once, right after the runner is
// ready with transformers in and out of process and an oplog processor,
// before any request: every series the README documents is there (at 0
// for the label values known at start), and every soplug_ series served
// is documented. An alert on rate() or absent() works from the start.
// The one exception, documented: soplug_oplog_worker_parked has a series
// per parked worker only, and soplug_oplog_workers{state="parked"} counts
// them from the start.
func TestMetricsFromTheStart(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "golemmeta_v1.0.0.so", "kindcount_v1.0.0.so", "wasmdigest_v1.0.0.so", "wasmtag_v1.1.0.so", "good-1.2.0.exec=good_v1.2.0")
	tokens := tokensFile(t, "prom control "+promToken)
	d := start(t, dir, "--state-dir", t.TempDir(), "--oplog-dir", t.TempDir(), "--plugin-metrics-ports", "19410-19419", "--tokens", tokens)
	addr := <-d.addr
	d.waitLog(t, `msg=ready status="serving golemmeta 1.0.0, good 1.2.0, kindcount 1.0.0, wasmdigest 1.0.0, wasmtag 1.1.0"`)
	text := get(t, "http://"+addr+"/metrics?access_token="+promToken)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	require.NoError(t, err)

	doc := documentedMetrics(t)
	require.GreaterOrEqual(t, len(doc), 20, "the README's metrics: %v", doc)
	for _, name := range doc {
		if name == "soplug_oplog_worker_parked" {
			continue
		}
		assert.Contains(t, fams, name, "documented, and on /metrics from the start")
	}
	for name := range fams {
		if strings.HasPrefix(name, "soplug_") {
			assert.Contains(t, doc, name, "served, and documented in the README")
		}
	}
	for _, series := range []string{
		`soplug_transform_requests_total{code="200",plugin="wasmtag",version="1.1.0"} 0`,
		`soplug_transform_errors_total{code="500",plugin="wasmtag",version="1.1.0"} 0`,
		`soplug_transform_duration_seconds_count{plugin="wasmdigest",version="1.0.0"} 0`,
		`soplug_oplog_batch_failures_total{processor="kindcount",version="1.0.0"} 0`,
		`soplug_oplog_redelivered_entries_total{processor="kindcount",version="1.0.0"} 0`,
		`soplug_oplog_workers{processor="kindcount",state="parked"} 0`,
		`soplug_oplog_lease_events_total{event="lost",processor="kindcount"} 0`,
		`soplug_plugin_scrape_errors_total{plugin="good",version="1.2.0"} 0`,
		`soplug_http_refused_total{reason="scope"} 0`,
		`soplug_plugin_process_restarts{plugin="good",version="1.2.0"} 0`,
	} {
		assert.Contains(t, text, series+"\n")
	}
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, d.exitCode(t), d.text())
}
