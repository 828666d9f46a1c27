package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/exitcode"
)

// TestRunStaggersRestarts: two runners of one group (--stagger-dir) see
// the same drop; one exits for it, and the other goes on serving until
// the first one's successor serves, then exits in turn.
func TestRunStaggersRestarts(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.1.0.so")
	group := t.TempDir()
	run := func(name string) *daemonProc {
		d := start(t, dir, "--stagger-dir", group, "--state-dir", filepath.Join(t.TempDir(), name))
		d.waitLog(t, `msg=ready status="serving wasmtag 1.1.0"`)
		return d
	}
	a, b := run("a"), run("b")

	renameIn(t, dir, "good-1.2.0", "wasmtag_v1.2.0.so")
	var first, second *daemonProc
	select {
	case <-a.done:
		first, second = a, b
	case <-b.done:
		first, second = b, a
	case <-time.After(time.Minute):
		t.Fatalf("neither runner exited for the drop:\n%s\n%s", a.text(), b.text())
	}
	assert.Equal(t, exitcode.Restart, first.exitCode(t), first.text())
	assert.Contains(t, first.text(), `msg="another runner serves this socket; restarting"`)
	second.waitLog(t, `msg="prepared the new selection"`)
	select {
	case <-second.done:
		t.Fatalf("both runners exited while neither served the new set:\n%s", second.text())
	case <-time.After(500 * time.Millisecond):
	}
	next := start(t, dir, "--stagger-dir", group, "--state-dir", filepath.Join(t.TempDir(), "next"), "--stagger-timeout", "1s")
	next.waitLog(t, `msg=ready status="serving wasmtag 1.2.0"`)
	assert.Equal(t, exitcode.Restart, second.exitCode(t), second.text())
	assert.Regexp(t, `msg="another runner serves this socket; restarting" waited=\S+`, second.text())

	// Alone, a runner of a group waits --stagger-timeout for a peer, says
	// so, and restarts.
	renameIn(t, dir, "good-2.0.0", "wasmtag_v2.0.0.so")
	assert.Equal(t, exitcode.Restart, next.exitCode(t), next.text())
	assert.Regexp(t, `msg="restarting with no other runner serving this socket: its connections wait for this one" waited=1(\.\d+)?s err="stagger: no other runner of the group serves within 1s`, next.text())
}

// A runner that serves no plugin (nothing acceptable, /readyz 503) does
// not count as serving for the others of its group.
func TestRunNotReadyIsNoPeer(t *testing.T) {
	t.Parallel()
	group := t.TempDir()
	idle := start(t, copyPlugins(t), "--stagger-dir", group)
	idle.waitLog(t, `msg=ready status="no acceptable plugin in `)
	dir := copyPlugins(t, "wasmtag_v1.1.0.so")
	d := start(t, dir, "--stagger-dir", group, "--stagger-timeout", "1s")
	d.waitLog(t, `msg=ready status="serving wasmtag 1.1.0"`)
	renameIn(t, dir, "good-1.2.0", "wasmtag_v1.2.0.so")
	assert.Equal(t, exitcode.Restart, d.exitCode(t), d.text())
	assert.Contains(t, d.text(), `msg="restarting with no other runner serving this socket: its connections wait for this one"`)
}

// A runner counts as serving for its group only once it has served
// --min-uptime: a peer's restart waits for that.
func TestRunCountsAPeerAfterItsMinUptime(t *testing.T) {
	t.Parallel()
	group := t.TempDir()
	dir := copyPlugins(t, "wasmtag_v1.1.0.so")
	young := start(t, copyPlugins(t, "wasmtag_v1.1.0.so"), "--stagger-dir", group, "--min-uptime", "3s")
	young.waitLog(t, `msg=ready`)
	d := start(t, dir, "--stagger-dir", group)
	d.waitLog(t, `msg=ready`)
	renameIn(t, dir, "good-1.2.0", "wasmtag_v1.2.0.so")
	assert.Equal(t, exitcode.Restart, d.exitCode(t), d.text())
	counted := logTime(t, young.text(), `msg="serving for the other runners of this socket" uptime=3(\.\d+)?s`)
	left := logTime(t, d.text(), `msg="another runner serves this socket; restarting"`)
	assert.False(t, left.Before(counted), "restarted at %s, before its peer counted at %s", left, counted)
}

// logTime returns the time of the first record of log that matches re.
func logTime(t *testing.T, log, re string) time.Time {
	t.Helper()
	rx := regexp.MustCompile(re)
	for _, line := range strings.Split(log, "\n") {
		if ts, ok := strings.CutPrefix(line, "time="); ok && rx.MatchString(line) {
			ts, _, _ = strings.Cut(ts, " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			require.NoError(t, err)
			return at
		}
	}
	t.Fatalf("no %q in the log:\n%s", re, log)
	return time.Time{}
}

// A SIGTERM while a runner waits for its peer stops it at once.
func TestRunStopsWhileWaitingForAPeer(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.1.0.so")
	d := start(t, dir, "--stagger-dir", t.TempDir(), "--stagger-timeout", "1h")
	d.waitLog(t, `msg=ready`)
	renameIn(t, dir, "good-1.2.0", "wasmtag_v1.2.0.so")
	d.waitLog(t, `msg="plugins folder changed; restarting onto the new set"`)
	time.Sleep(200 * time.Millisecond) // into the wait
	start := time.Now()
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	code := d.exitCode(t)
	assert.Less(t, time.Since(start), 10*time.Second, "ended with the signal, not the hour")
	assert.Equal(t, 0, code, "a clean stop:\n%s", d.text())
	assert.NotContains(t, d.text(), "restarting with no other runner serving")
}

// A --stagger-dir that cannot be used ends the start with status 1 and
// the path.
func TestRunRefusesAnUnusableStaggerDir(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	var stderr bytes.Buffer
	code := runCmd(t.Context(), []string{"--plugins", copyPlugins(t), "--listen", "127.0.0.1:0", "--stagger-dir", file}, &stderr)
	assert.Equal(t, exitcode.Failure, code)
	assert.Contains(t, stderr.String(), "stagger: the group folder cannot be used: "+filepath.Join(file, "serving.lock")+": ")
	assert.Contains(t, stderr.String(), "not a directory")
}
