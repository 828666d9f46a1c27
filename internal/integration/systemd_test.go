// Package integration runs the built runner under a real systemd, with the
// shipped unit files, and checks the deploy flow end to end: serve, drop a
// new version, roll back, restart with no failed request, quarantine a
// version that crashes the daemon.
package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/daemon"
	"github.com/soplug/soplug/internal/fixtures"
	"github.com/soplug/soplug/internal/wasm"
)

const unit = "soplug.service"

// deployment is the runner installed under systemd for the test.
type deployment struct {
	t       *testing.T
	work    string
	plugins string
	base    string
	sd      *systemd
	client  *http.Client
}

func TestUnderSystemd(t *testing.T) {
	if why := canBoot(); why != "" {
		t.Skip("systemd cannot boot here: " + why)
	}
	d := deploy(t)

	t.Run("serves the newest acceptable version", func(t *testing.T) {
		p := d.sd.show(unit, "ActiveState", "SubState", "Type", "NRestarts")
		assert.Equal(t, map[string]string{"ActiveState": "active", "SubState": "running", "Type": "notify", "NRestarts": "0"}, p)
		rep := d.health()
		assert.Equal(t, "1.1.0", version(rep, "wasmtag"))
		assert.Equal(t, "1.0.0", version(rep, "kindcount"))
		status := d.sd.show(unit, "StatusText")["StatusText"]
		assert.Equal(t, "serving kindcount 1.0.0, wasmtag 1.1.0", status, "STATUS= names the active versions")
		log := d.serviceLog()
		assert.Contains(t, log, `from="systemd socket activation"`)
		assert.Contains(t, log, `msg="systemd watchdog enabled" interval=30s ping_every=15s`)

		module, err := os.ReadFile(filepath.Join(fixtures.Root(), "testdata", "wasm", "module.wasm"))
		require.NoError(t, err)
		resp, err := d.client.Post(d.base+"/v1/transform", "application/wasm", bytes.NewReader(module))
		require.NoError(t, err)
		out, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out)
		assert.Equal(t, "wasmtag", resp.Header.Get("Soplug-Plugin"))
		tag, ok := wasm.CustomSection(out, "soplug.wasmtag")
		assert.True(t, ok)
		assert.Equal(t, "wasmtag 1.1.0\nteam=integration\n", string(tag), "the configuration reaches the plugin")
	})

	t.Run("a slowly copied new version ends up serving", func(t *testing.T) {
		before := d.sd.nrestarts(unit)
		var failures atomic.Int64
		stop := d.load(2, &failures, nil)
		// 4 s of copying: longer than --min-uptime plus a start, so at least
		// one restart lands while the file is still half-written.
		d.slowCopy(fixture(t, "good-1.2.0"), "wasmtag_v1.2.0.so", 8, 500*time.Millisecond)
		d.waitVersion("wasmtag", "1.2.0")
		stop()
		assert.Greater(t, d.sd.nrestarts(unit), before)
		assert.Zero(t, failures.Load(), "requests failed during the copy")
		log := d.serviceLog()
		assert.Contains(t, log, "truncated ELF file", "a restart during the copy saw the half-written file and fell back")
	})

	t.Run("deleting the newest version rolls back", func(t *testing.T) {
		require.NoError(t, os.Remove(filepath.Join(d.plugins, "wasmtag_v1.2.0.so")))
		d.waitVersion("wasmtag", "1.1.0")
		assert.Equal(t, "active", d.sd.show(unit, "ActiveState")["ActiveState"])
	})

	t.Run("20 drops and rollbacks under load fail no request", func(t *testing.T) {
		before := d.sd.nrestarts(unit)
		var failures, served atomic.Int64
		var lat latencies
		stop := d.load(4, &failures, &served, &lat)
		time.Sleep(5 * time.Second) // steady state, before the first drop
		steadyEnd := time.Now()
		var dropToServing []time.Duration
		var changing [][2]time.Time // from each change to serving the new set
		for range 20 {
			// Drop once the serving process is past --min-uptime, so that
			// what is measured is the way from the rename to serving, not
			// the hold that paces back-to-back changes.
			time.Sleep(time.Until(d.health().Started.Add(daemon.DefaultMinUptime + 100*time.Millisecond)))
			start := d.drop(fixture(t, "good-1.2.0"), "wasmtag_v1.2.0.so")
			d.waitVersion("wasmtag", "1.2.0")
			dropToServing = append(dropToServing, time.Since(start))
			changing = append(changing, [2]time.Time{start, time.Now()})
			time.Sleep(time.Until(d.health().Started.Add(daemon.DefaultMinUptime + 100*time.Millisecond)))
			start = time.Now()
			require.NoError(t, os.Remove(filepath.Join(d.plugins, "wasmtag_v1.2.0.so")))
			d.waitVersion("wasmtag", "1.1.0")
			changing = append(changing, [2]time.Time{start, time.Now()})
		}
		stop()
		during := within(changing)
		s50, s99, smax, sn := lat.stats(func(s sample) bool { return s.at.Before(steadyEnd) })
		d50, d99, dmax, dn := lat.stats(during)
		t.Logf("request latency: steady p50 %s p99 %s max %s (%d requests); during drops p50 %s p99 %s max %s (%d requests)",
			s50, s99, smax, sn, d50, d99, dmax, dn)
		windows := unavailability(t, d.serviceLog(), steadyEnd)
		w50, w95 := percentile(windows, 50), percentile(windows, 95)
		t.Logf("unavailability (listeners closed to the next READY=1) over %d restarts: p50 %s, p95 %s", len(windows), w50, w95)
		restarts := d.sd.nrestarts(unit) - before
		assert.GreaterOrEqual(t, restarts, 40, "one restart per change")
		assert.Zero(t, failures.Load(), "failed requests out of %d", served.Load()+failures.Load())
		assert.Greater(t, served.Load(), int64(100))
		p50, p95 := percentile(dropToServing, 50), percentile(dropToServing, 95)
		t.Logf("drop-to-serving over %d drops: p50 %s, p95 %s; %d restarts; %d requests served, %d failed",
			len(dropToServing), p50, p95, restarts, served.Load(), failures.Load())
		if out := os.Getenv("SOPLUG_DROP_BENCH_OUT"); out != "" {
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			var all []float64
			for _, d := range dropToServing {
				all = append(all, ms(d))
			}
			data, _ := json.Marshal(map[string]any{"drops": len(dropToServing), "p50_ms": ms(p50), "p95_ms": ms(p95),
				"all_ms": all, "restarts": restarts, "requests": served.Load(), "failed": failures.Load(),
				"window_p50_ms": ms(w50), "window_p95_ms": ms(w95), "windows": len(windows),
				"steady_p50_ms": ms(s50), "steady_p99_ms": ms(s99), "steady_max_ms": ms(smax), "steady_n": sn,
				"drop_p50_ms": ms(d50), "drop_p99_ms": ms(d99), "drop_max_ms": ms(dmax), "drop_n": dn})
			require.NoError(t, os.WriteFile(out, data, 0o644))
			require.NoError(t, os.WriteFile(out+".log", []byte(d.serviceLog()), 0o644))
			require.NoError(t, os.WriteFile(out+".console", []byte(d.sd.console()), 0o644))
			// Every request during the changes: the change it fell in (from
			// 0), when it started after that change, how long it took (ms),
			// and when it started (Unix ms, to set beside the service log).
			var rows strings.Builder
			for _, s := range lat.all() {
				for i, c := range changing {
					if !s.at.Before(c[0]) && s.at.Before(c[1]) {
						fmt.Fprintf(&rows, "%d %.3f %.3f %.3f\n", i, ms(s.at.Sub(c[0])), ms(s.took), float64(s.at.UnixMicro())/1000)
					}
				}
			}
			require.NoError(t, os.WriteFile(out+".samples", []byte(rows.String()), 0o644))
		}
	})

	t.Run("two SIGKILLs with only proven versions quarantine nothing", func(t *testing.T) {
		d.sd.ctl("restart", unit) // a clean stop: every version served is proven
		want := served(d.health())
		require.NotEmpty(t, want)
		for i := range 2 { // as the OOM killer would
			pid := d.health().PID
			d.sd.ctl("kill", "--signal=SIGKILL", unit)
			eventually(t, "started again after the kill", time.Minute, func() (bool, string) {
				rep := d.health()
				return rep.PID != pid && rep.Ready, fmt.Sprintf("kill %d: pid %d, ready %v", i, rep.PID, rep.Ready)
			})
		}
		rep := d.health()
		assert.Equal(t, want, served(rep), "all still served")
		for _, c := range rep.Rejected {
			assert.NotContains(t, c.Reason, "quarantined", c.File)
		}
		assert.Contains(t, d.serviceLog(), `msg="the previous run ended uncleanly" crash_output=false blamed=0 systemd="SERVICE_RESULT=signal EXIT_CODE=killed EXIT_STATUS=KILL"`,
			"ExecStopPost recorded systemd's account, and the start weighed it")
		assert.NotContains(t, d.serviceLog(), "with this version loaded")
	})

	t.Run("two stops that time out with only proven versions quarantine nothing", func(t *testing.T) {
		// A runner that does not stop within TimeoutStopSec= is killed by
		// systemd (SERVICE_RESULT=timeout): here its drain waits for a
		// client that sends half a body and nothing more (--drain-timeout
		// is 10 s), and the unit's timeout is shortened to 2 s. (A frozen
		// process would not do: systemd sends SIGCONT after SIGTERM.)
		dropIn := filepath.Join(d.work, "units", unit+".d", "stop-timeout.conf")
		require.NoError(t, os.WriteFile(dropIn, []byte("[Service]\nTimeoutStopSec=2s\n"), 0o644))
		d.sd.ctl("daemon-reload")
		t.Cleanup(func() {
			os.Remove(dropIn)
			d.sd.ctl("daemon-reload")
		})
		d.sd.ctl("restart", unit) // a clean stop: every version served is proven
		want := served(d.health())
		require.NotEmpty(t, want)
		for i := range 2 {
			pid := d.health().PID
			conn, err := net.Dial("tcp", strings.TrimPrefix(d.base, "http://"))
			require.NoError(t, err)
			_, err = io.WriteString(conn, "POST /v1/transform/wasmtag HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n\x00asm")
			require.NoError(t, err)
			time.Sleep(200 * time.Millisecond) // its request is being read
			start := time.Now()
			d.sd.ctl("restart", unit) // returns once the new process is ready
			took := time.Since(start)
			conn.Close()
			rep := d.health()
			require.NotEqual(t, pid, rep.PID, "stop %d: a new process", i)
			assert.GreaterOrEqual(t, took, 2*time.Second, "stop %d: systemd waited out TimeoutStopSec=", i)
		}
		rep := d.health()
		assert.Equal(t, want, served(rep), "all still served")
		for _, c := range rep.Rejected {
			assert.NotContains(t, c.Reason, "quarantined", c.File)
		}
		log := d.serviceLog()
		assert.Equal(t, 2, strings.Count(log, `systemd="SERVICE_RESULT=timeout EXIT_CODE=killed EXIT_STATUS=KILL"`),
			"ExecStopPost recorded both timeouts, and each start weighed one:\n%s", tail(log, 40))
		assert.NotContains(t, log, "with this version loaded")
	})

	t.Run("a version that crashes the daemon is quarantined", func(t *testing.T) {
		before := d.sd.nrestarts(unit)
		d.drop(fixture(t, "crashafterload"), "wasmtag_v3.0.0.so")
		var rep daemon.Report
		eventually(t, "quarantined and back on 1.1.0", 2*time.Minute, func() (bool, string) {
			rep = d.health()
			return version(rep, "wasmtag") == "1.1.0" && rejectedFor(rep, "wasmtag_v3.0.0.so", "quarantined after 2 crashes"),
				fmt.Sprintf("%+v", rep)
		})
		p := d.sd.show(unit, "ActiveState", "SubState", "NRestarts", "Result")
		assert.Equal(t, "active", p["ActiveState"])
		assert.Equal(t, "running", p["SubState"])
		assert.GreaterOrEqual(t, d.sd.nrestarts(unit)-before, 3, "the drop, then two crashes")
		assert.Contains(t, d.serviceLog(), "crashafterload: fatal error after load")
	})

	t.Run("the same crash out of process does not restart the service", func(t *testing.T) {
		require.NoError(t, os.Remove(filepath.Join(d.plugins, "wasmtag_v3.0.0.so")))
		d.drop(fixture(t, "crashafterload.exec"), "wasmtag_v3.0.0")
		d.waitVersion("wasmtag", "3.0.0")
		before := d.sd.nrestarts(unit)
		var rep daemon.Report
		eventually(t, "the plugin process died and was started again", time.Minute, func() (bool, string) {
			rep = d.health()
			p := plugin(rep, "wasmtag")
			return p.Process != nil && p.Process.Restarts >= 1 && p.Process.PID > 0, fmt.Sprintf("%+v", p)
		})
		module, err := os.ReadFile(filepath.Join(fixtures.Root(), "testdata", "wasm", "module.wasm"))
		require.NoError(t, err)
		resp, err := d.client.Post(d.base+"/v1/transform/wasmtag", "application/wasm", bytes.NewReader(module))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, "served by the restarted process")
		assert.Equal(t, "3.0.0", resp.Header.Get("Soplug-Plugin-Version"))
		assert.Equal(t, before, d.sd.nrestarts(unit), "NRestarts unchanged: the plugin process died, not the service")
		assert.Contains(t, d.serviceLog(), "plugin process died; starting it again")
	})

	t.Run("no plugin process outlives 20 restarts", func(t *testing.T) {
		before := d.sd.nrestarts(unit)
		// An older version that is never tried: a change of the set that
		// leaves the selection as it is. (A file that cannot be a plugin,
		// a README, changes nothing.)
		note := filepath.Join(d.plugins, "wasmtag_v0.0.1.so")
		for i := range 20 {
			time.Sleep(time.Until(d.health().Started.Add(daemon.DefaultMinUptime + 100*time.Millisecond)))
			pid := d.health().PID
			if i%2 == 0 {
				require.NoError(t, os.WriteFile(note, []byte("a change\n"), 0o644))
			} else {
				require.NoError(t, os.Remove(note))
			}
			eventually(t, "a restart", time.Minute, func() (bool, string) {
				rep := d.health()
				return rep.PID != pid && rep.Ready, fmt.Sprintf("pid %d", rep.PID)
			})
		}
		assert.GreaterOrEqual(t, d.sd.nrestarts(unit)-before, 20)
		exe := filepath.Join(d.plugins, "wasmtag_v3.0.0")
		eventually(t, "one plugin process", 10*time.Second, func() (bool, string) {
			pids := processesOf(exe)
			return len(pids) == 1, fmt.Sprintf("processes of %s: %v", exe, pids)
		})
		require.NoError(t, os.Remove(exe))
		d.waitVersion("wasmtag", "1.1.0")
		eventually(t, "none once it is removed", 10*time.Second, func() (bool, string) {
			pids := processesOf(exe)
			return len(pids) == 0, fmt.Sprintf("processes of %s: %v", exe, pids)
		})
	})

	t.Run("stop is clean", func(t *testing.T) {
		d.sd.ctl("stop", unit)
		p := d.sd.show(unit, "ActiveState", "Result", "ExecMainStatus")
		assert.Equal(t, "inactive", p["ActiveState"])
		assert.Equal(t, "success", p["Result"])
		assert.Equal(t, "0", p["ExecMainStatus"])
	})
}

// plugin returns the health of the plugin named name.
func plugin(rep daemon.Report, name string) daemon.PluginHealth {
	for _, p := range rep.Plugins {
		if p.Name == name {
			return p
		}
	}
	return daemon.PluginHealth{}
}

// processesOf returns the live processes running the executable exe (a
// removed file still counts).
func processesOf(exe string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || strings.TrimSuffix(target, " (deleted)") != exe {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && strings.Contains(string(stat), ") Z ") {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// deploy installs the runner, the example plugins and the shipped units
// (with the paths and port of this test) and starts the service.
func deploy(t *testing.T) *deployment { return deployUnits(t, false) }

// deployUnits is deploy; with pair, of the pair of runners on one socket
// (soplug-pair.socket, soplug@a and soplug@b) instead of soplug.service.
func deployUnits(t *testing.T, pair bool) *deployment {
	// DynamicUser= implies PrivateTmp=, so nothing the service reads may be
	// under /tmp; the namespace shares the host's other folders.
	work, err := os.MkdirTemp("/opt", "soplug-it-")
	require.NoError(t, err)
	tag := filepath.Base(work)
	t.Cleanup(func() {
		for _, p := range []string{work, "/var/lib/private/" + tag, "/var/lib/" + tag} {
			os.RemoveAll(p)
		}
		for _, i := range []string{"a", "b", "pair"} {
			os.RemoveAll("/var/lib/private/" + tag + "-" + i)
			os.RemoveAll("/var/lib/" + tag + "-" + i)
		}
	})
	service, socket := unit, "soplug.socket"
	if pair {
		service, socket = pairUnit, "soplug-pair.socket"
	}
	d := &deployment{t: t, work: work, plugins: filepath.Join(work, "plugins"), client: &http.Client{Timeout: 30 * time.Second}}
	for _, dir := range []string{work, d.plugins, filepath.Join(work, "bin"), filepath.Join(work, "units", service+".d")} {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.Chmod(dir, 0o755)) // the service's dynamic user reads them
	}
	bin := filepath.Join(work, "bin", "runner")
	out, err := exec.Command("go", append(append([]string{"build"}, fixtures.BuildFlags...), "-o", bin, filepath.Join(fixtures.Root(), "cmd", "runner"))...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, f := range []string{"wasmtag_v1.0.0.so", "wasmtag_v1.1.0.so", "kindcount_v1.0.0.so"} {
		d.drop(filepath.Join(fixtures.Root(), "plugins", f), f)
	}

	port := freePort(t)
	d.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	units := filepath.Join(work, "units")
	install := func(name string, repl ...string) {
		data, err := os.ReadFile(filepath.Join(fixtures.Root(), "deploy", "systemd", name))
		require.NoError(t, err)
		text := string(data)
		for i := 0; i < len(repl); i += 2 {
			require.Contains(t, text, repl[i], "the shipped %s changed; update the test", name)
			text = strings.ReplaceAll(text, repl[i], repl[i+1])
		}
		require.NoError(t, os.WriteFile(filepath.Join(units, name), []byte(text), 0o644))
	}
	install(socket, "127.0.0.1:7420", fmt.Sprintf("127.0.0.1:%d", port))
	conf := filepath.Join(work, "plugins.toml")
	require.NoError(t, os.WriteFile(conf, []byte("[plugins.wasmtag.config]\nteam = \"integration\"\n"), 0o644))
	paths := []string{"/opt/soplug/bin/runner", bin, "/opt/soplug/plugins", d.plugins, "/etc/soplug/plugins.toml", conf}
	logFile := filepath.Join(work, "service.log")
	if pair {
		install(service, append(paths, "StateDirectory=soplug-%i soplug-pair", "StateDirectory="+tag+"-%i "+tag+"-pair",
			"/var/lib/soplug-", "/var/lib/"+tag+"-")...)
		logFile = filepath.Join(work, "service-%i.log")
	} else {
		install(service, append(paths, "StateDirectory=soplug", "StateDirectory="+tag)...)
	}
	dropIn := fmt.Sprintf("[Service]\nStandardOutput=append:%s\nStandardError=append:%s\nUnsetEnvironment=SOPLUG_WASMTAG_V2\n", logFile, logFile)
	require.NoError(t, os.WriteFile(filepath.Join(units, service+".d", "test.conf"), []byte(dropIn), 0o644))
	verifyUnits(t, filepath.Join(units, service), filepath.Join(units, socket))

	d.sd = bootSystemd(t, units, filepath.Join(work, "sdns"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service log:\n%s", d.serviceLog())
			t.Logf("systemd console (tail):\n%s", tail(d.sd.console(), 60))
		}
	})
	if pair {
		d.sd.ctl("start", socket, "soplug@a.service", "soplug@b.service") // returns after both READY=1
	} else {
		d.sd.ctl("start", socket, unit) // returns after READY=1
	}
	return d
}

// drop places src in the plugins folder as name the way a deploy should:
// a dotfile copy, then a rename. It returns the time of the rename.
func (d *deployment) drop(src, name string) time.Time {
	d.t.Helper()
	data, err := os.ReadFile(src)
	require.NoError(d.t, err, "run ./build_plugins.sh first")
	tmp := filepath.Join(d.plugins, "."+name+".tmp")
	mode := os.FileMode(0o644)
	if !strings.HasSuffix(name, ".so") {
		mode = 0o755 // an out-of-process plugin
	}
	require.NoError(d.t, os.WriteFile(tmp, data, mode))
	require.NoError(d.t, os.Chmod(tmp, mode)) // whatever the umask
	// On disk before it is visible, as runner plugins install does: else
	// the first fsync anyone makes (the new runner's quarantine record)
	// writes its 5 MB out first, on ext4's ordered journal.
	f, err := os.Open(tmp)
	require.NoError(d.t, err)
	require.NoError(d.t, f.Sync())
	require.NoError(d.t, f.Close())
	now := time.Now()
	require.NoError(d.t, os.Rename(tmp, filepath.Join(d.plugins, name)))
	return now
}

// slowCopy writes src into the plugins folder as name directly, in chunks
// with pauses longer than the debounce: the way a careless cp over a slow
// link looks to the daemon.
func (d *deployment) slowCopy(src, name string, chunks int, pause time.Duration) {
	d.t.Helper()
	data, err := os.ReadFile(src)
	require.NoError(d.t, err)
	f, err := os.OpenFile(filepath.Join(d.plugins, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	require.NoError(d.t, err)
	defer f.Close()
	size := (len(data) + chunks - 1) / chunks
	for off := 0; off < len(data); off += size {
		_, err := f.Write(data[off:min(off+size, len(data))])
		require.NoError(d.t, err)
		time.Sleep(pause)
	}
}

func (d *deployment) health() daemon.Report {
	d.t.Helper()
	var rep daemon.Report
	resp, err := d.client.Get(d.base + "/v1/health")
	require.NoError(d.t, err)
	defer resp.Body.Close()
	require.NoError(d.t, json.NewDecoder(resp.Body).Decode(&rep))
	return rep
}

func (d *deployment) waitVersion(name, want string) {
	d.t.Helper()
	eventually(d.t, name+" "+want+" serving", time.Minute, func() (bool, string) {
		rep := d.health()
		return version(rep, name) == want, fmt.Sprintf("%s %s, pid %d", name, version(rep, name), rep.PID)
	})
}

// latencies records when each request started and how long it took.
type latencies struct {
	mu      sync.Mutex
	samples []sample
}

type sample struct {
	at   time.Time
	took time.Duration
}

// all returns a copy of the samples.
func (l *latencies) all() []sample {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sample(nil), l.samples...)
}

func (l *latencies) add(at time.Time, took time.Duration) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.samples = append(l.samples, sample{at, took})
	l.mu.Unlock()
}

// stats returns the p50, p99 and maximum of the samples that keep says to.
func (l *latencies) stats(keep func(sample) bool) (p50, p99, most time.Duration, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ds []time.Duration
	for _, s := range l.samples {
		if keep(s) {
			ds = append(ds, s.took)
		}
	}
	if len(ds) == 0 {
		return 0, 0, 0, 0
	}
	return percentile(ds, 50), percentile(ds, 99), slices.Max(ds), len(ds)
}

// load runs n clients that request /v1/health until stop is called,
// counting failures (a transport error or a status other than 200) and
// recording each request's latency in lat[0] when given. With
// SOPLUG_DROP_CLIENT_PAUSE set (a duration), each client pauses that
// long after each answer: a load that leaves the machine's cores some
// room, where without it the clients and the runner take them all.
func (d *deployment) load(n int, failures, served *atomic.Int64, lat ...*latencies) (stop func()) {
	var rec *latencies
	if len(lat) > 0 {
		rec = lat[0]
	}
	var pause time.Duration
	if p := os.Getenv("SOPLUG_DROP_CLIENT_PAUSE"); p != "" {
		var err error
		pause, err = time.ParseDuration(p)
		require.NoError(d.t, err, "SOPLUG_DROP_CLIENT_PAUSE")
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				start := time.Now()
				resp, err := d.client.Get(d.base + "/v1/health")
				if err != nil {
					failures.Add(1)
					d.t.Logf("request failed: %v", err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failures.Add(1)
					d.t.Logf("request failed: %s", resp.Status)
				} else if served != nil {
					served.Add(1)
				}
				rec.add(start, time.Since(start))
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}()
	}
	return func() { close(done); wg.Wait() }
}

// serviceLog returns the service's log; of a pair, both runners' logs,
// one after the other.
func (d *deployment) serviceLog() string {
	logs, _ := filepath.Glob(filepath.Join(d.work, "service*.log"))
	var all strings.Builder
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		all.Write(data)
	}
	return all.String()
}

func fixture(t *testing.T, name string) string {
	return fixtures.Path(t, name)
}

func version(rep daemon.Report, name string) string {
	for _, p := range rep.Plugins {
		if p.Name == name {
			return p.Version
		}
	}
	return ""
}

func rejectedFor(rep daemon.Report, file, reason string) bool {
	for _, c := range rep.Rejected {
		if c.File == file && strings.Contains(c.Reason, reason) {
			return true
		}
	}
	return false
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// recordTime returns the time of a service log's record (its time=).
func recordTime(line string) (time.Time, bool) {
	ts, ok := strings.CutPrefix(line, "time=")
	if !ok {
		return time.Time{}, false
	}
	ts, _, _ = strings.Cut(ts, " ")
	at, err := time.Parse(time.RFC3339Nano, ts)
	return at, err == nil
}

// unavailability returns, for each restart logged after since, the time
// from the old process's "closing the listeners" to the new one's ready.
func unavailability(t *testing.T, log string, since time.Time) []time.Duration {
	t.Helper()
	var out []time.Duration
	var closed time.Time
	for _, line := range strings.Split(log, "\n") {
		at, ok := recordTime(line)
		if !ok || at.Before(since) {
			continue
		}
		switch {
		case strings.Contains(line, `msg="closing the listeners"`):
			closed = at
		case strings.Contains(line, "msg=ready") && !closed.IsZero():
			out = append(out, at.Sub(closed))
			closed = time.Time{}
		}
	}
	require.NotEmpty(t, out, "no restart in the service log")
	return out
}

// within says whether a sample started in one of the spans [from, to).
func within(spans [][2]time.Time) func(sample) bool {
	return func(s sample) bool {
		for _, c := range spans {
			if !s.at.Before(c[0]) && s.at.Before(c[1]) {
				return true
			}
		}
		return false
	}
}

// served lists the versions a report says are served.
func served(rep daemon.Report) (out []string) {
	for _, p := range rep.Plugins {
		out = append(out, p.Name+" "+p.Version)
	}
	return out
}
