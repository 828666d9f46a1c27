package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/daemon"
	"github.com/soplug/soplug/internal/fixtures"
)

// pairUnit is the template of the pair of runners on soplug-pair.socket.
const pairUnit = "soplug@.service"

// pairInstances are the pair's two runners.
var pairInstances = []string{"a", "b"}

// pairChanges are the lines in which soplug@.service differs from
// soplug.service: it is that unit, as one of two on a shared socket.
var pairChanges = []string{
	"# The soplug runner. Install the runner as /opt/soplug/bin/runner and drop\n# plugins into /opt/soplug/plugins; see the README's \"Deploying\" section.\n",
	"# One of a pair of soplug runners on one socket, soplug-pair.socket: start\n# soplug@a.service and soplug@b.service. They restart one at a time for a\n# plugin change (--stagger-dir), each once the other serves, so that a\n# restart makes no connection wait. Apart from the lines that say which\n# instance it is, this is soplug.service; see the README's \"Deploying\"\n# section, \"Two runners on one socket\".\n",
	"Description=soplug plugin runner\nRequires=soplug.socket\nAfter=soplug.socket\n",
	"Description=soplug plugin runner %i (of a pair on soplug-pair.socket)\nRequires=soplug-pair.socket\nAfter=soplug-pair.socket\n",
	"NotifyAccess=main\n", "NotifyAccess=main\n# Both instances take the pair's listening socket.\nSockets=soplug-pair.socket\n",
	"--config /etc/soplug/plugins.toml\n", "--config /etc/soplug/plugins.toml --state-dir /var/lib/soplug-%i --stagger-dir /var/lib/soplug-pair\n",
	"exec /opt/soplug/bin/runner stop-post'", "exec /opt/soplug/bin/runner stop-post --state-dir /var/lib/soplug-%i'",
	"# Quarantine records, the verdict cache, oplog cursors, and the lock that\n# keeps a second runner off them; the runner reads $STATE_DIRECTORY.\nStateDirectory=soplug\n",
	"# Each instance's own quarantine records, verdict cache and lock, and the\n# pair's folder of restart locks. The two share one dynamic user (User=),\n# so that both may lock files in that folder.\nStateDirectory=soplug-%i soplug-pair\n",
	"DynamicUser=yes\n", "DynamicUser=yes\nUser=soplug\n",
	"Also=soplug.socket\n", "Also=soplug-pair.socket\n",
}

// The pair's unit is the single runner's with only the lines that make it
// one of two: its hardening and restart policy cannot drift apart.
func TestPairUnitIsTheSingleOne(t *testing.T) {
	dir := filepath.Join(fixtures.Root(), "deploy", "systemd")
	single, err := os.ReadFile(filepath.Join(dir, unit))
	require.NoError(t, err)
	pair, err := os.ReadFile(filepath.Join(dir, pairUnit))
	require.NoError(t, err)
	want := string(single)
	for i := 0; i < len(pairChanges); i += 2 {
		require.Equal(t, 1, strings.Count(want, pairChanges[i]), "soplug.service changed: update the pair's unit and this list: %q", pairChanges[i])
		want = strings.Replace(want, pairChanges[i], pairChanges[i+1], 1)
	}
	assert.Equal(t, want, string(pair))
}

func TestPairUnderSystemd(t *testing.T) {
	if why := canBoot(); why != "" {
		t.Skip("systemd cannot boot here: " + why)
	}
	d := deployUnits(t, true)
	logs := map[string]*logTail{}
	for _, i := range pairInstances {
		logs[i] = &logTail{path: filepath.Join(d.work, "service-"+i+".log")}
	}

	t.Run("both serve the newest acceptable versions", func(t *testing.T) {
		for _, i := range pairInstances {
			p := d.sd.show("soplug@"+i+".service", "ActiveState", "StatusText")
			assert.Equal(t, map[string]string{"ActiveState": "active", "StatusText": "serving kindcount 1.0.0, wasmtag 1.1.0"}, p, i)
		}
		assert.Equal(t, 2, strings.Count(d.serviceLog(), `from="systemd socket activation"`))
		assert.Equal(t, "1.1.0", version(d.health(), "wasmtag"))
	})

	t.Run("10 drops and rollbacks under load: restarts one at a time, no request waits", func(t *testing.T) {
		var failures, served atomic.Int64
		var lat latencies
		stop := d.load(4, &failures, &served, &lat)
		time.Sleep(5 * time.Second) // steady state, before the first drop
		steadyEnd := time.Now()
		var dropToServing, dropToFirst []time.Duration
		// While a runner restarts: from each change to the first runner's
		// ready, and from the second's decision to restart (the first one's
		// successor has served --min-uptime) to its ready. Between the two,
		// no process starts or stops.
		var changing [][2]time.Time
		last := time.Now()
		change := func(do func() time.Time, status string) (first, all time.Time) {
			time.Sleep(time.Until(last.Add(daemon.DefaultMinUptime + 100*time.Millisecond)))
			start := do()
			first, all, second := waitPair(t, logs, start, status)
			left, ok := logAfter(logs[second].path, first, `msg="another runner serves this socket; restarting"`)
			require.True(t, ok, "runner %s waited for the other one to serve", second)
			changing = append(changing, [2]time.Time{start, first}, [2]time.Time{left, all})
			last = all
			return first, all
		}
		for range 10 {
			var start time.Time
			first, all := change(func() time.Time {
				start = d.drop(fixture(t, "good-1.2.0"), "wasmtag_v1.2.0.so")
				return start
			}, "serving kindcount 1.0.0, wasmtag 1.2.0")
			dropToFirst = append(dropToFirst, first.Sub(start))
			dropToServing = append(dropToServing, all.Sub(start))
			change(func() time.Time {
				now := time.Now()
				require.NoError(t, os.Remove(filepath.Join(d.plugins, "wasmtag_v1.2.0.so")))
				return now
			}, "serving kindcount 1.0.0, wasmtag 1.1.0")
		}
		stop()
		during := within(changing)
		s50, s99, smax, sn := lat.stats(func(s sample) bool { return s.at.Before(steadyEnd) })
		d50, d99, dmax, dn := lat.stats(during)
		_, _, _, waited := lat.stats(func(s sample) bool { return during(s) && s.took >= 20*time.Millisecond })
		t.Logf("request latency: steady p50 %s p99 %s max %s (%d requests); during changes p50 %s p99 %s max %s (%d requests, %d of 20 ms or more)",
			s50, s99, smax, sn, d50, d99, dmax, dn, waited)
		p50, p95 := percentile(dropToServing, 50), percentile(dropToServing, 95)
		f50, f95 := percentile(dropToFirst, 50), percentile(dropToFirst, 95)
		t.Logf("drop to both serving over %d drops: p50 %s, p95 %s (to the first: p50 %s); %d requests served, %d failed",
			len(dropToServing), p50, p95, f50, served.Load(), failures.Load())
		assert.Zero(t, failures.Load(), "failed requests out of %d", served.Load()+failures.Load())
		log := d.serviceLog()
		restarts := 0
		for _, i := range pairInstances {
			restarts += d.sd.nrestarts("soplug@" + i + ".service")
		}
		assert.Equal(t, 40, restarts, "each change restarts both")
		assert.Equal(t, 40, strings.Count(log, `msg="another runner serves this socket; restarting"`),
			"each restart waited for the other runner to serve:\n%s", tail(log, 40))
		assert.NotContains(t, log, "restarting with no other runner serving this socket")
		if out := os.Getenv("SOPLUG_PAIR_BENCH_OUT"); out != "" {
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			data, _ := json.Marshal(map[string]any{"drops": len(dropToServing), "p50_ms": ms(p50), "p95_ms": ms(p95),
				"first_p50_ms": ms(f50), "first_p95_ms": ms(f95), "restarts": restarts, "requests": served.Load(), "failed": failures.Load(),
				"steady_p50_ms": ms(s50), "steady_p99_ms": ms(s99), "steady_max_ms": ms(smax), "steady_n": sn,
				"drop_p50_ms": ms(d50), "drop_p99_ms": ms(d99), "drop_max_ms": ms(dmax), "drop_n": dn, "waited_n": waited})
			require.NoError(t, os.WriteFile(out, data, 0o644))
			require.NoError(t, os.WriteFile(out+".log", []byte(log), 0o644))
		}
	})

	t.Run("a version that crashes its runner never reaches the other one first", func(t *testing.T) {
		// The first runner to restart loads it, and crashes a second after
		// the load, twice, until it quarantines it; the other serves the
		// set before it until then, for it counts on a runner only once
		// that has served --min-uptime.
		since := time.Now()
		var failures, served atomic.Int64
		stop := d.load(4, &failures, &served)
		d.drop(fixture(t, "crashafterload"), "wasmtag_v3.0.0.so")
		eventually(t, "both quarantined it and serve 1.1.0", 2*time.Minute, func() (bool, string) {
			ok := true
			for _, i := range pairInstances {
				_, quarantined := logAfter(logs[i].path, since, "quarantined=true")
				p := d.sd.show("soplug@"+i+".service", "StatusText")
				ok = ok && quarantined && p["StatusText"] == "serving kindcount 1.0.0, wasmtag 1.1.0"
			}
			return ok, tail(d.serviceLog(), 20)
		})
		stop()
		assert.Zero(t, failures.Load(), "failed requests out of %d", served.Load()+failures.Load())
		left := map[string]time.Time{}
		for _, i := range pairInstances {
			at, ok := logAfter(logs[i].path, since, `msg="another runner serves this socket; restarting"`)
			require.True(t, ok, "runner %s restarted for the drop", i)
			left[i] = at
		}
		first, second := "a", "b"
		if left["b"].Before(left["a"]) {
			first, second = "b", "a"
		}
		quarantined, _ := logAfter(logs[first].path, since, "quarantined=true")
		assert.True(t, left[second].After(quarantined), "%s restarted for the drop at %s, after %s quarantined it at %s",
			second, left[second].Format(time.StampMilli), first, quarantined.Format(time.StampMilli))
		require.NoError(t, os.Remove(filepath.Join(d.plugins, "wasmtag_v3.0.0.so")))
		waitPair(t, logs, time.Now(), "serving kindcount 1.0.0, wasmtag 1.1.0")
	})

	t.Run("a kill -9 of one runner under load fails no request", func(t *testing.T) {
		// As the OOM killer would: the other runner serves meanwhile, and
		// the connections the killed one held are made again to it.
		u := "soplug@b.service"
		pid := d.sd.show(u, "MainPID")["MainPID"]
		since := time.Now()
		var failures, served atomic.Int64
		stop := d.load(4, &failures, &served)
		time.Sleep(time.Second)
		d.sd.ctl("kill", "--signal=SIGKILL", u)
		eventually(t, "b started again", time.Minute, func() (bool, string) {
			p := d.sd.show(u, "MainPID", "ActiveState")
			return p["MainPID"] != pid && p["MainPID"] != "0" && p["ActiveState"] == "active", fmt.Sprint(p)
		})
		_, ready, _ := waitPair(t, map[string]*logTail{"b": logs["b"]}, since, "serving kindcount 1.0.0, wasmtag 1.1.0")
		time.Sleep(time.Until(ready.Add(time.Second)))
		stop()
		assert.Zero(t, failures.Load(), "failed requests out of %d", served.Load()+failures.Load())
		assert.Contains(t, d.serviceLog(), `systemd="SERVICE_RESULT=signal EXIT_CODE=killed EXIT_STATUS=KILL"`)
	})

	t.Run("stop is clean", func(t *testing.T) {
		for _, i := range pairInstances {
			u := "soplug@" + i + ".service"
			d.sd.ctl("stop", u)
			p := d.sd.show(u, "ActiveState", "Result", "ExecMainStatus")
			assert.Equal(t, map[string]string{"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, p, i)
		}
	})
}

// waitPair waits until both runners of the pair logged ready with status
// after since, and returns when the first and the second did, and which
// one the second was.
func waitPair(t *testing.T, logs map[string]*logTail, since time.Time, status string) (first, all time.Time, second string) {
	t.Helper()
	ready := map[string]time.Time{}
	deadline := time.Now().Add(time.Minute)
	for len(ready) < len(logs) {
		require.True(t, time.Now().Before(deadline), "both runners serving %q: ready %v", status, ready)
		for i, l := range logs {
			if _, ok := ready[i]; ok {
				continue
			}
			if at, ok := l.ready(since, status); ok {
				ready[i] = at
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i, at := range ready {
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(all) {
			all, second = at, i
		}
	}
	return first, all, second
}

// logAfter returns the time of the first line of the log at path logged
// at or after since that contains substr.
func logAfter(path string, since time.Time, substr string) (time.Time, bool) {
	data, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(data), "\n") {
		if at, ok := recordTime(line); ok && !at.Before(since) && strings.Contains(line, substr) {
			return at, true
		}
	}
	return time.Time{}, false
}

// logTail reads a runner's log as it grows.
type logTail struct {
	path    string
	off     int64
	partial []byte
}

// ready returns the time of the first "ready" line with status logged at
// or after since among the lines not read before.
func (l *logTail) ready(since time.Time, status string) (time.Time, bool) {
	f, err := os.Open(l.path)
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		n, _ := f.ReadAt(buf, l.off)
		if n == 0 {
			return time.Time{}, false
		}
		l.off += int64(n)
		data := append(l.partial, buf[:n]...)
		end := bytes.LastIndexByte(data, '\n')
		l.partial = append([]byte(nil), data[end+1:]...)
		for _, line := range strings.Split(string(data[:end+1]), "\n") {
			if !strings.Contains(line, "msg=ready") || !strings.Contains(line, fmt.Sprintf("status=%q", status)) {
				continue
			}
			if at, ok := recordTime(line); ok && !at.Before(since) {
				return at, true
			}
		}
	}
}
