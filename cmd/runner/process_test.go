package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/daemon"
	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/transform"
	"github.com/soplug/soplug/internal/wasm"
)

// processHealth returns the health entry of plugin name.
func processHealth(t *testing.T, addr, name string) daemon.PluginHealth {
	t.Helper()
	var rep daemon.Report
	require.Equal(t, http.StatusOK, getJSON(t, "http://"+addr+"/v1/health", &rep))
	for _, p := range rep.Plugins {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no %s in %+v", name, rep.Plugins)
	return daemon.PluginHealth{}
}

// TestProcessBackendEndToEnd: an out-of-process transformer whose process
// dies during a request costs that request a 503, is started again while the
// runner goes on serving, and after more deaths than the runner tolerates is
// quarantined and the runner restarts onto the next version.
func TestProcessBackendEndToEnd(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "faulty.exec=faulty_v1.0.0", "wasmtag_v1.1.0.so")
	state := t.TempDir()
	d := start(t, dir, "--state-dir", state, "--transform-timeout", "5s", "--plugin-metrics-ports", "19400-19409")
	addr := <-d.addr
	d.waitLog(t, `msg=ready status="serving faulty 1.0.0, wasmtag 1.1.0"`)
	h := processHealth(t, addr, "faulty")
	assert.Equal(t, "process", h.Backend)
	require.NotNil(t, h.Process)
	assert.Equal(t, "127.0.0.1:19400", h.Process.MetricsAddr)
	assert.Contains(t, get(t, "http://"+h.Process.MetricsAddr+"/metrics"), "go_goroutines", "the plugin process serves its own metrics")
	assert.Contains(t, get(t, "http://"+addr+"/metrics"), `soplug_plugin_process_up{plugin="faulty",version="1.0.0"} 1`)

	module := wasmInput(t, "module.wasm")
	crash := wasm.AppendCustomSection(append([]byte{}, module...), "soplug.test", []byte("crash"))
	for i := 1; i <= 6; i++ {
		resp, out := postWasm(t, "http://"+addr+"/v1/transform/faulty", crash)
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s", out)
		assert.Contains(t, string(out), "the plugin process is unavailable")
		if i == 6 {
			break // the sixth death within a minute: the runner gives up on it
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, out = postWasm(t, "http://"+addr+"/v1/transform/faulty", module)
			if resp.StatusCode == http.StatusOK {
				break
			}
			require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s", out)
			require.True(t, time.Now().Before(deadline), "faulty did not come back")
			time.Sleep(50 * time.Millisecond)
		}
		assert.Equal(t, "1.0.0", resp.Header.Get(transform.HeaderVersion))
		assert.Equal(t, i, processHealth(t, addr, "faulty").Process.Restarts)
		assert.Contains(t, get(t, "http://"+addr+"/metrics"), fmt.Sprintf(`soplug_plugin_process_restarts{plugin="faulty",version="1.0.0"} %d`, i))
		resp, _ = postWasm(t, "http://"+addr+"/v1/transform/wasmtag", module)
		assert.Equal(t, http.StatusOK, resp.StatusCode, "the other plugin serves throughout")
	}
	assert.Equal(t, exitcode.Restart, d.exitCode(t), d.text())
	text := d.text()
	assert.Contains(t, text, "plugin process died; starting it again")
	assert.Contains(t, text, "faulty: asked to crash the process", "the plugin's stderr is in the runner's log")
	assert.Contains(t, text, "faulty 1.0.0 quarantined: the plugin process died 6 times within 1m0s")
	assert.Zero(t, strings.Count(text, "level=ERROR msg=\"runner failed\""))

	d = start(t, dir, "--state-dir", state)
	d.waitLog(t, `msg=ready status="serving wasmtag 1.1.0"`)
	assert.Regexp(t, `msg=candidate file=faulty_v1\.0\.0 verdict=rejected .*stage=admit reason="not admitted: quarantine: quarantined after`, d.text())
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, d.exitCode(t))
}

// TestProcessBackendNoOrphans: the plugin process ends with the runner,
// on SIGTERM and on SIGKILL alike.
func TestProcessBackendNoOrphans(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		dir := copyPlugins(t, "faulty.exec=faulty_v1.0.0")
		d := start(t, dir)
		addr := <-d.addr
		d.waitLog(t, `msg=ready`)
		pid := processHealth(t, addr, "faulty").Process.PID
		require.Positive(t, pid)
		require.NoError(t, d.cmd.Process.Signal(sig))
		d.exitCode(t)
		deadline := time.Now().Add(10 * time.Second)
		for {
			stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
			if err != nil || strings.Contains(string(stat), ") Z ") {
				break
			}
			require.True(t, time.Now().Before(deadline), "plugin process %d outlived the runner (%s)", pid, sig)
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestProcessorDiesMidBatch: an out-of-process OplogProcessor that dies in
// the middle of a batch, after applying part of it, gets that batch again
// flagged as a redelivery once its process is back: no entry is seen
// twice unflagged, and none is lost.
func TestProcessorDiesMidBatch(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	oplogDir, seen := filepath.Join(work, "oplog"), filepath.Join(work, "seen.log")
	writeOplogs(t, oplogDir, 2, 1000)
	dir := copyPlugins(t, "oplogrecorder.exec=recorder_v1.0.0")
	conf := filepath.Join(work, "plugins.toml")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("[plugins.recorder.config]\nfile = %q\ndie_at = \"worker-000:150\"\n", seen)), 0o644))
	d := start(t, dir, "--config", conf, "--oplog-dir", oplogDir, "--state-dir", filepath.Join(work, "state"), "--oplog-batch", "100",
		"--oplog-parallel", "1") // one batch in the process at a time: the other worker's is never caught in the death
	addr := <-d.addr
	deadline := time.Now().Add(time.Minute)
	for {
		st := oplogStatus(t, addr)
		done := 0
		for _, p := range st.Processors {
			for _, w := range p.Workers {
				if w.Acked == 1000 {
					done++
				}
			}
		}
		if done == 2 {
			break
		}
		require.True(t, time.Now().Before(deadline), "not delivered: %+v\n%s", st, d.text())
		time.Sleep(50 * time.Millisecond)
	}
	assert.Equal(t, 1, processHealth(t, addr, "recorder").Process.Restarts, "the process died once")
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, d.exitCode(t), d.text())

	rec := readRecorder(t, seen)
	extra := 0
	for _, w := range []string{"worker-000", "worker-001"} {
		for i := uint64(1); i <= 1000; i++ {
			got := [2]int{rec.plain[w][i], rec.flagged[w][i]}
			switch {
			case w == "worker-000" && i > 100 && i < 150: // applied, then the process died
				require.Equal(t, [2]int{1, 1}, got, "%s %d: deliveries [unflagged, flagged]", w, i)
			case w == "worker-000" && i >= 150 && i <= 200: // the rest of that batch
				require.Equal(t, [2]int{0, 1}, got, "%s %d: deliveries [unflagged, flagged]", w, i)
			default:
				// A call made while the dead process was not yet noticed
				// fails as one that may have run: its batch comes again
				// flagged, which the contract allows ("may have been
				// passed before"). Never twice unflagged, never lost.
				require.Equal(t, 1, got[0]+got[1], "%s %d: deliveries [unflagged, flagged] %v", w, i, got)
				extra += got[1]
			}
		}
	}
	t.Logf("entries flagged although their process never saw them: %d", extra)
	assert.Zero(t, rec.torn)
}

// scrape reads the runner's /metrics and parses it as Prometheus does.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err, "the merged exposition parses")
	return fams
}

// series returns the value of the series of family name whose labels
// include want ("plugin=faulty", ...), and whether there is one.
func series(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	mf, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for _, w := range want {
			k, v, _ := strings.Cut(w, "=")
			if have[k] != v {
				match = false
			}
		}
		if match {
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			}
			return 0, true
		}
	}
	return 0, false
}

// TestPluginProcessMetrics: the runner's /metrics carries every plugin
// process's own series labelled plugin and version, beside its own; a
// process whose /metrics hangs costs only its own series and a counted
// scrape error, within the scrape deadline; one that dies between scrapes
// is started again after the configured backoff and reported in
// /v1/health; /v1/discovery lists the targets.
func TestPluginProcessMetrics(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "faulty.exec=faulty_v1.0.0", "good-1.2.0.exec=good_v1.2.0")
	d := start(t, dir, "--plugin-metrics-ports", "19420-19429", "--plugin-scrape-timeout", "300ms",
		"--plugin-restart-backoff", "50ms", "--plugin-max-deaths", "20/1m")
	addr := <-d.addr
	d.waitLog(t, `msg=ready status="serving faulty 1.0.0, good 1.2.0"`)
	base := "http://" + addr
	module := wasmInput(t, "module.wasm")
	withCommand := func(cmd string) []byte {
		return wasm.AppendCustomSection(append([]byte{}, module...), "soplug.test", []byte(cmd))
	}
	for range 3 {
		resp, out := postWasm(t, base+"/v1/transform/faulty", withCommand("count"))
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out)
	}

	fams := scrape(t, base)
	v, ok := series(fams, "faulty_transforms_total", "plugin=faulty", "version=1.0.0", "command=count")
	require.True(t, ok, "the plugin's own series, labelled")
	assert.Equal(t, 3.0, v)
	_, ok = series(fams, "go_goroutines", "plugin=good", "version=1.2.0")
	assert.True(t, ok, "the other process's runtime series")
	for _, m := range fams["go_goroutines"].GetMetric() {
		if len(m.GetLabel()) == 0 {
			ok = true // the runner's own, unlabelled
		}
	}
	assert.True(t, ok)
	v, _ = series(fams, "soplug_plugin_scrape_errors_total", "plugin=faulty")
	assert.Zero(t, v)

	var groups []struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	require.Equal(t, http.StatusOK, getJSON(t, base+"/v1/discovery", &groups))
	assert.ElementsMatch(t, []string{"faulty", "good"}, []string{groups[0].Labels["plugin"], groups[1].Labels["plugin"]})
	for _, g := range groups {
		require.Len(t, g.Targets, 1)
		assert.Contains(t, get(t, "http://"+g.Targets[0]+"/metrics"), "go_goroutines", "a discovered target serves metrics")
	}

	// faulty's /metrics hangs from now on.
	resp, _ := postWasm(t, base+"/v1/transform/faulty", withCommand("hangmetrics"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	start := time.Now()
	fams = scrape(t, base)
	took := time.Since(start)
	_, ok = series(fams, "faulty_transforms_total", "plugin=faulty")
	assert.False(t, ok, "the hanging process's series are left out")
	_, ok = series(fams, "go_goroutines", "plugin=good")
	assert.True(t, ok, "the other process's are not")
	v, _ = series(fams, "soplug_plugin_scrape_errors_total", "plugin=faulty", "version=1.0.0")
	assert.Equal(t, 1.0, v, "the failed scrape is counted")
	assert.Less(t, took, 5*time.Second, "the scrape ends at its deadline (300ms), not the plugin's")

	// faulty dies between scrapes; it is started again and says why.
	resp, _ = postWasm(t, base+"/v1/transform/faulty", withCommand("crash"))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	fams = scrape(t, base)
	_, ok = series(fams, "go_goroutines", "plugin=good")
	assert.True(t, ok, "a dead process costs only its own series")
	eventually(t, func() bool {
		p := processHealth(t, addr, "faulty").Process
		return p.Restarts == 1 && p.State == "running"
	})
	var rep daemon.Report
	require.Equal(t, http.StatusOK, getJSON(t, base+"/v1/health", &rep))
	h := processHealth(t, addr, "faulty")
	assert.Equal(t, 1, h.Process.Restarts)
	assert.Equal(t, "running", h.State)
	assert.Contains(t, h.LastError, "the process died: panic: faulty: asked to crash the process")
	assert.Equal(t, map[string]string{"faulty": daemon.Healthy, "good": daemon.Healthy}, rep.Health)
	fams = scrape(t, base)
	v, ok = series(fams, "faulty_transforms_total", "plugin=faulty", "command=count")
	assert.False(t, ok && v == 3, "the new process counts from zero: %v", v)
}
