package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/quarantine"
)

// sparse makes a sparse file of size bytes: no blocks on disk, every
// byte of it a zero to whoever reads it.
func sparse(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
}

const readyAll = `msg=ready status="serving golemmeta 1.0.0, kindcount 1.0.0, wasmdigest 1.0.0, wasmtag 1.1.0"`

// readyAfter starts the runner on dir with flags and returns how long it
// took to be ready; it stops it with SIGTERM.
func readyAfter(t *testing.T, dir string, flags ...string) (time.Duration, string) {
	t.Helper()
	begin := time.Now()
	d := start(t, dir, flags...)
	d.waitLog(t, readyAll)
	took := time.Since(begin)
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, d.exitCode(t), d.text())
	return took, d.text()
}

// TestHugePluginFile: a 10 GiB file named as the newest version of a
// plugin is refused from its size (--max-plugin-size, 1 GiB) before
// anything reads it, so the start is as quick as without it; measured as a
// ratio in one run (the faster of two starts each, alternating). Before,
// the verdict cache hashed it whole: 5.8 s to ready instead of 156 ms.
func TestHugePluginFile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the runner four times")
	}
	plain := copyPlugins(t, "golemmeta_v1.0.0.so", "kindcount_v1.0.0.so", "wasmdigest_v1.0.0.so", "wasmtag_v1.1.0.so")
	huge := copyPlugins(t, "golemmeta_v1.0.0.so", "kindcount_v1.0.0.so", "wasmdigest_v1.0.0.so", "wasmtag_v1.1.0.so")
	sparse(t, filepath.Join(huge, "wasmtag_v9.0.0.so"), 10<<30)
	best := func(a, b time.Duration) time.Duration { return min(a, b) }
	var withHuge, without time.Duration = time.Hour, time.Hour
	var log string
	for range 2 {
		d, _ := readyAfter(t, plain, "--state-dir", t.TempDir())
		without = best(without, d)
		state := t.TempDir()
		d, log = readyAfter(t, huge, "--state-dir", state)
		withHuge = best(withHuge, d)
	}
	assert.Regexp(t, `file=wasmtag_v9\.0\.0\.so verdict=rejected .*stage=check reason="plugin file over the size limit: wasmtag_v9\.0\.0\.so is 10\.0 GiB \(10737418240 bytes\), over the limit of 1\.0 GiB`, log)
	t.Logf("ready in %v with the 10 GiB file, %v without", withHuge, without)
	assert.Less(t, float64(withHuge)/float64(without), 2.0, "ready with the huge file in %v, without it in %v", withHuge, without)
}

// TestSIGTERMWhileProbing: a candidate whose init hangs holds the start
// in its probe for up to --probe-timeout (here 60 s); SIGTERM then ends the
// runner within a second, its probe child with it.
func TestSIGTERMWhileProbing(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.1.0.so", "initsleep=wasmtag_v9.0.0.so")
	d := start(t, dir, "--probe-timeout", "60s", "--log-level", "DEBUG")
	termDuring(t, d, "the probe")
	assert.Empty(t, processesNaming(t, dir), "no probe child outlives the runner")
}

// termDuring waits until d starts on its newest candidate, wasmtag 9.0.0
// (it logs the probe at debug level), lets step begin, sends SIGTERM, and
// checks that the runner exits, not killed by the signal, within a second.
func termDuring(t *testing.T, d *daemonProc, step string) {
	t.Helper()
	d.waitLog(t, `msg="probing plugin candidate" file=wasmtag_v9\.0\.0\.so`)
	time.Sleep(300 * time.Millisecond) // into the step
	sent := time.Now()
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	code := d.exitCode(t)
	took := time.Since(sent)
	assert.GreaterOrEqual(t, code, 0, "it exits, not killed by the signal: %s", d.text())
	assert.Less(t, took, time.Second, "SIGTERM during %s: exited after %v\n%s", step, took, d.text())
	t.Logf("exited %v after SIGTERM during %s", took, step)
}

// processesNaming returns the PIDs of the processes whose command line
// mentions s.
func processesNaming(t *testing.T, s string) []string {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	require.NoError(t, err)
	var out []string
	for _, p := range dirs {
		data, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(data), s) {
			out = append(out, filepath.Base(filepath.Dir(p)))
		}
	}
	return out
}

// TestSIGTERMWhileHashing: with the size limit raised above a 10 GiB
// file, its verdict is hashed for the cache after its checks reject it
// (a read of 10 GiB of zeros, seconds); SIGTERM then ends the runner
// within a second, the read stopped where it was.
func TestSIGTERMWhileHashing(t *testing.T) {
	if testing.Short() {
		t.Skip("a read of a 10 GiB file")
	}
	dir := copyPlugins(t, "wasmtag_v1.1.0.so")
	sparse(t, filepath.Join(dir, "wasmtag_v9.0.0.so"), 10<<30)
	d := start(t, dir, "--state-dir", t.TempDir(), "--max-plugin-size", "20GiB", "--log-level", "DEBUG")
	termDuring(t, d, "the hash")
	assert.NotContains(t, d.text(), readyAll)
}

// TestUnusableStateDir: a state folder the runner cannot write is exit 1
// with the folder, the step and the errno, not 73 ("another runner owns
// it"), which only a live owner gets. The read-only case is a read-only
// bind mount in a user and mount namespace of the runner's own.
func TestUnusableStateDir(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare(1)")
	}
	if err := exec.Command("unshare", "-rm", "true").Run(); err != nil {
		t.Skipf("unshare -rm: %v (no user namespaces here)", err)
	}
	file := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	ro := t.TempDir()
	roParent := t.TempDir()
	for _, tc := range []struct {
		name, mount, dir, want string
	}{
		{"read-only folder", ro, ro, ro + ": opening its lock file: open " + ro + "/.runner.lock: read-only file system (EROFS)"},
		{"missing folder on a read-only file system", roParent, roParent + "/state", roParent + "/state: creating it: mkdir " + roParent + "/state: read-only file system (EROFS)"},
		{"a file in its place", "", file, file + ": creating it: mkdir " + file + ": not a directory (ENOTDIR)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{binary(t), "run", "--plugins", examples, "--listen", "127.0.0.1:0", "--state-dir", tc.dir}
			cmd := exec.Command(args[0], args[1:]...)
			if tc.mount != "" {
				script := `mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"`
				cmd = exec.Command("unshare", append([]string{"-rm", "sh", "-c", script, "sh", tc.mount}, args...)...)
			}
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "%s", out)
			assert.Equal(t, exitcode.Failure, ee.ExitCode(), "%s", out)
			assert.Contains(t, string(out), "runner run: dirlock: the folder cannot be used: "+tc.want)
		})
	}
}

// TestKillsBlameNoProvenPlugin: the runner serves the examples, stops
// cleanly (every version proven), then is killed with SIGKILL twice, as
// the OOM killer or systemd's stop timeout would: no version is blamed,
// and the next start serves them all.
func TestKillsBlameNoProvenPlugin(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "golemmeta_v1.0.0.so", "kindcount_v1.0.0.so", "wasmdigest_v1.0.0.so", "wasmtag_v1.1.0.so")
	state := t.TempDir()
	d := start(t, dir, "--state-dir", state)
	d.waitLog(t, readyAll)
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, d.exitCode(t), d.text())
	for i := range 2 {
		d := start(t, dir, "--state-dir", state)
		d.waitLog(t, readyAll)
		require.NoError(t, d.cmd.Process.Kill())
		require.Equal(t, -int(syscall.SIGKILL), d.exitCode(t))
		if i == 1 {
			assert.Contains(t, d.text(), `msg="the previous run ended uncleanly" crash_output=false blamed=0`)
		}
	}
	d = start(t, dir, "--state-dir", state)
	d.waitLog(t, readyAll)
	assert.NotContains(t, d.text(), "with this version loaded", d.text())
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, d.exitCode(t), d.text())
}

// TestStopPost: runner stop-post records systemd's account of the end from
// the environment ExecStopPost= gets; without it, it says what it is for.
func TestStopPost(t *testing.T) {
	state := t.TempDir()
	t.Setenv("SERVICE_RESULT", "oom-kill")
	t.Setenv("EXIT_CODE", "killed")
	t.Setenv("EXIT_STATUS", "KILL")
	code, out, stderr := runner(t, "stop-post", "--state-dir", state)
	require.Equal(t, exitcode.OK, code, stderr)
	assert.Contains(t, out, "recorded SERVICE_RESULT=oom-kill EXIT_CODE=killed EXIT_STATUS=KILL in "+state)
	data, err := os.ReadFile(filepath.Join(state, quarantine.StopFile))
	require.NoError(t, err)
	assert.Contains(t, string(data), `"service_result":"oom-kill"`)

	t.Setenv("SERVICE_RESULT", "")
	code, _, stderr = runner(t, "stop-post", "--state-dir", state)
	assert.Equal(t, exitcode.Usage, code)
	assert.Contains(t, stderr, "no $SERVICE_RESULT: this command is the unit's ExecStopPost=")
	t.Setenv("STATE_DIRECTORY", "")
	code, _, stderr = runner(t, "stop-post")
	assert.Equal(t, exitcode.Usage, code)
	assert.Contains(t, stderr, "no state directory")
}

// TestCheckReadsTheCache: plugins check --state-dir reuses the verdicts a
// run kept, says how many, and writes nothing in the state directory.
func TestCheckReadsTheCache(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "golemmeta_v1.0.0.so", "kindcount_v1.0.0.so", "wasmdigest_v1.0.0.so", "wasmtag_v1.1.0.so")
	state := t.TempDir()
	d := start(t, dir, "--state-dir", state)
	d.waitLog(t, readyAll)
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, d.exitCode(t), d.text())

	snapshot := func() map[string]string {
		out := map[string]string{}
		entries, err := os.ReadDir(state)
		require.NoError(t, err)
		for _, e := range entries {
			data, _ := os.ReadFile(filepath.Join(state, e.Name()))
			fi, err := e.Info()
			require.NoError(t, err)
			out[e.Name()] = fmt.Sprintf("%d %s %x", fi.Size(), fi.ModTime(), data)
		}
		return out
	}
	before := snapshot()
	// The runner binary the run was: verdicts are kept per runner build.
	outb, err := exec.Command(binary(t), "plugins", "check", "--plugins", dir, "--state-dir", state).CombinedOutput()
	out := string(outb)
	require.NoError(t, err, out)
	assert.Contains(t, out, "verdicts reused from "+filepath.Join(state, "verdicts.json")+": 4 of 4 looked up")
	assert.Contains(t, out, "selected: wasmtag 1.1.0")
	assert.Equal(t, before, snapshot(), "check writes nothing in the state directory")

	// A run record cut short (a power loss): check says the next start
	// ignores it, and leaves it for that start.
	require.NoError(t, os.WriteFile(filepath.Join(state, "run.json"), []byte(`{"pid": 4`), 0o600))
	before = snapshot()
	outb, err = exec.Command(binary(t), "plugins", "check", "--plugins", dir, "--state-dir", state).CombinedOutput()
	out = string(outb)
	require.NoError(t, err, out)
	assert.Contains(t, out, "the next start ignores the previous run's record: "+filepath.Join(state, "run.json")+" is not valid JSON")
	assert.Equal(t, before, snapshot(), "check writes nothing in the state directory")
}
