package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/quarantine"
	"github.com/soplug/soplug/internal/wasm"
)

// notifySocket is the socket systemd's sd_notify messages go to, played
// by the test: it records when each WATCHDOG=1 came.
type notifySocket struct {
	path  string
	mu    sync.Mutex
	pings []time.Time
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:k]), "WATCHDOG=1") {
				n.mu.Lock()
				n.pings = append(n.pings, time.Now())
				n.mu.Unlock()
			}
		}
	}()
	return n
}

// since returns the pings after t0.
func (n *notifySocket) since(t0 time.Time) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, p := range n.pings {
		if p.After(t0) {
			c++
		}
	}
	return c
}

// starveAndAbort waits for d to report the stuck call stuck (a regexp),
// checks that the watchdog then goes unfed past WatchdogSec, aborts d as
// systemd would (SIGABRT) and checks that the crash output in state names
// frame, the stuck call's.
func starveAndAbort(t *testing.T, d *daemonProc, n *notifySocket, state, stuck, frame string) {
	t.Helper()
	d.waitLog(t, `msg="a plugin call is stuck: the watchdog is no longer fed.*stuck="`+stuck)
	starved := time.Now()
	time.Sleep(1500 * time.Millisecond) // past WatchdogSec
	assert.Zero(t, n.since(starved), "no WATCHDOG=1 while the call is stuck")

	require.NoError(t, d.cmd.Process.Signal(syscall.SIGABRT)) // systemd's WatchdogSignal=
	assert.Equal(t, 2, d.exitCode(t), "the Go runtime's exit on SIGABRT:\n%s", d.text())
	crash, err := os.ReadFile(filepath.Join(state, quarantine.CrashFile))
	require.NoError(t, err)
	assert.Contains(t, string(crash), "SIGABRT: abort")
	assert.Contains(t, string(crash), frame)
}

// TestWatchdogCatchesAStuckCall: a Transform call that ignores its
// deadline is stuck once it runs --hang-after past it; the runner then
// stops feeding the watchdog (the test plays systemd's notify socket, with
// WatchdogSec=1s), systemd's SIGABRT (sent here as systemd would) dumps
// every goroutine into the state directory's crash output, and the next
// start blames the plugin whose call was running, by that stack, and not
// the bystander loaded beside it.
func TestWatchdogCatchesAStuckCall(t *testing.T) {
	n := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", n.path)
	t.Setenv("WATCHDOG_USEC", "1000000")
	dir := copyPlugins(t, "faulty=faulty_v1.0.0.so", "wasmtag_v1.1.0.so")
	state := t.TempDir()
	d := start(t, dir, "--state-dir", state, "--transform-timeout", "200ms", "--hang-after", "1s")
	addr := <-d.addr
	d.waitLog(t, `msg=ready status="serving faulty 1.0.0, wasmtag 1.1.0"`)
	d.waitLog(t, `msg="systemd watchdog enabled"`)
	require.Eventually(t, func() bool { return n.since(time.Time{}) > 0 }, 10*time.Second, 10*time.Millisecond, "the watchdog is fed")

	stuck := wasm.AppendCustomSection(wasmInput(t, "module.wasm"), "soplug.test", []byte("stuck"))
	resp, _ := postWasm(t, "http://"+addr+"/v1/transform/faulty", stuck)
	assert.Equal(t, http.StatusGatewayTimeout, resp.StatusCode, "the request ends at its deadline; the call goes on")
	starveAndAbort(t, d, n, state, `a Transform call into faulty 1\.0\.0 has run`, "github.com/soplug/soplug/testdata/fixtures/faulty.faulty.Transform(")

	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	d = start(t, dir, "--state-dir", state)
	d.waitLog(t, `msg=ready`)
	assert.Regexp(t, `msg="the previous run ended uncleanly with this version loaded" plugin=faulty version=1\.0\.0 crashes=1 quarantined=false evidence="its code is in the crash stack: github\.com/soplug/soplug/testdata/fixtures/faulty\.faulty\.Transform\(`, d.text())
	assert.NotContains(t, d.text(), `with this version loaded" plugin=wasmtag`, "the bystander is not blamed")
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, d.exitCode(t), d.text())
}

// TestWatchdogCatchesAStuckProcess: the same for an oplog processor's
// Process call, which has no deadline: once it has run --oplog-hang-after,
// the watchdog is no longer fed, the SIGABRT's stacks name the processor,
// and the next start blames it by them.
func TestWatchdogCatchesAStuckProcess(t *testing.T) {
	n := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", n.path)
	t.Setenv("WATCHDOG_USEC", "1000000")
	work := t.TempDir()
	dir := copyPlugins(t, "oplogrecorder=recorder_v1.0.0.so", "wasmtag_v1.1.0.so")
	conf := filepath.Join(work, "plugins.toml")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("[plugins.recorder.config]\nfile = %q\nhang_on = \"w-stuck\"\n", filepath.Join(work, "seen.log"))), 0o644))
	state, oplogDir := filepath.Join(work, "state"), filepath.Join(work, "oplog")
	d := start(t, dir, "--config", conf, "--state-dir", state, "--oplog-dir", oplogDir, "--oplog-hang-after", "1s")
	addr := <-d.addr
	d.waitLog(t, `msg=ready`)
	require.Eventually(t, func() bool { return n.since(time.Time{}) > 0 }, 10*time.Second, 10*time.Millisecond, "the watchdog is fed")

	for _, w := range []string{"w-stuck", "w-fine"} {
		resp, err := http.Post("http://"+addr+"/v1/workers/"+w+"/oplog", "application/json",
			strings.NewReader(`{"entries":[{"index":1,"kind":"k","payload":"aGk="}]}`))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	starveAndAbort(t, d, n, state, `a Process call into recorder 1\.0\.0 for worker w-stuck has run`, "github.com/soplug/soplug/testdata/fixtures/oplogrecorder.(*recorder).Process(")

	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	d = start(t, dir, "--config", conf, "--state-dir", state, "--oplog-dir", oplogDir, "--oplog-hang-after", "1s")
	d.waitLog(t, `msg=ready`)
	assert.Regexp(t, `msg="the previous run ended uncleanly with this version loaded" plugin=recorder version=1\.0\.0 crashes=1 quarantined=false evidence="its code is in the crash stack: github\.com/soplug/soplug/testdata/fixtures/oplogrecorder\.\(\*recorder\)\.Process\(`, d.text())
	assert.NotContains(t, d.text(), `with this version loaded" plugin=wasmtag`, "the bystander is not blamed")
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGKILL)) // its stuck call would hold a clean stop
}

// TestKillDuringACallBlamesIt: a kill that leaves no stack (SIGKILL, as
// the OOM killer's) in the middle of a Transform call, with two unproven
// versions loaded: the next start blames the one whose call was in flight
// (the count in the state directory's mapped file says so), not the
// bystander; before the counts, neither could be told from the other.
func TestKillDuringACallBlamesIt(t *testing.T) {
	dir := copyPlugins(t, "faulty=faulty_v1.0.0.so", "wasmtag_v1.1.0.so")
	state := t.TempDir()
	d := start(t, dir, "--state-dir", state, "--transform-timeout", "200ms")
	addr := <-d.addr
	d.waitLog(t, `msg=ready status="serving faulty 1.0.0, wasmtag 1.1.0"`)
	resp, _ := postWasm(t, "http://"+addr+"/v1/transform/wasmtag", wasmInput(t, "module.wasm"))
	require.Equal(t, http.StatusOK, resp.StatusCode, "a finished call into the bystander")
	stuck := wasm.AppendCustomSection(wasmInput(t, "module.wasm"), "soplug.test", []byte("stuck"))
	resp, _ = postWasm(t, "http://"+addr+"/v1/transform/faulty", stuck)
	require.Equal(t, http.StatusGatewayTimeout, resp.StatusCode, "the request ends; the call goes on")
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGKILL))
	assert.Equal(t, -int(syscall.SIGKILL), d.exitCode(t))

	d = start(t, dir, "--state-dir", state)
	d.waitLog(t, `msg=ready`)
	assert.Regexp(t, `msg="the previous run ended uncleanly with this version loaded" plugin=faulty version=1\.0\.0 crashes=1 quarantined=false evidence="a call into it was in flight when the run ended \(1 in flight\); no stack named a plugin"`, d.text())
	assert.NotContains(t, d.text(), `with this version loaded" plugin=wasmtag`, "the bystander is not blamed")
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, d.exitCode(t), d.text())
}
