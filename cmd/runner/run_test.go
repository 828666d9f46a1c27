package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/daemon"
	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/fixtures"
)

var (
	buildOnce sync.Once
	runnerBin string
	buildErr  error
)

// binary builds the runner once for the package's tests, with the flags
// build_plugins.sh uses for the plugins.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "soplug-runner-test-")
		if err != nil {
			buildErr = err
			return
		}
		runnerBin = filepath.Join(dir, "runner")
		out, err := exec.Command("go", append(append([]string{"build"}, fixtures.BuildFlags...), "-o", runnerBin, ".")...).CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	require.NoError(t, buildErr)
	return runnerBin
}

// daemonProc is a runner run process under test.
type daemonProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs strings.Builder
	addr chan string
	done chan struct{}
	err  error
}

var listenRE = regexp.MustCompile(`msg=listening addrs=\[([^\]]+)\]`)

// start runs the runner on dir with extra flags, logging to a buffer.
func start(t *testing.T, dir string, flags ...string) *daemonProc {
	t.Helper()
	return startIn(t, "", append([]string{"run", "--plugins", dir, "--listen", "127.0.0.1:0", "--debounce", "100ms", "--min-uptime", "-1s"}, flags...)...)
}

// startIn runs the runner with args in the folder cwd ("": this one).
func startIn(t *testing.T, cwd string, args ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{cmd: exec.Command(binary(t), args...), addr: make(chan string, 1), done: make(chan struct{})}
	d.cmd.Dir = cwd
	d.cmd.Env = append(os.Environ(), "SOPLUG_WASMTAG_V2=")
	stderr, err := d.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, d.cmd.Start())
	t.Cleanup(func() { _ = d.cmd.Process.Kill(); <-d.done })
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.mu.Lock()
			d.logs.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				d.addr <- m[1]
			}
		}
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	return d
}

func (d *daemonProc) text() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.String()
}

// waitLog waits until the log matches re.
func (d *daemonProc) waitLog(t *testing.T, re string) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(time.Minute)
	for !rx.MatchString(d.text()) {
		select {
		case <-d.done:
			require.Regexp(t, rx, d.text(), "the runner exited before logging it")
			return
		case <-time.After(20 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "no %q in the log within a minute:\n%s", re, d.text())
	}
}

// exitCode waits for the process to end and returns its exit status, or
// -signal when a signal ended it.
func (d *daemonProc) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(time.Minute):
		t.Fatalf("the runner did not exit within a minute:\n%s", d.text())
	}
	if d.err == nil {
		return 0
	}
	var ee *exec.ExitError
	require.ErrorAs(t, d.err, &ee)
	if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
		return -int(ws.Signal())
	}
	return ee.ExitCode()
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if v != nil {
		require.NoError(t, json.Unmarshal(body, v), "%s", body)
	}
	return resp.StatusCode
}

// copyPlugins makes a plugins folder holding the given files from
// the examples (file names) or the fixtures (fixture=file).
func copyPlugins(t *testing.T, specs ...string) string {
	dir := t.TempDir()
	for _, s := range specs {
		src, dst := filepath.Join(examples, s), s
		if name, file, ok := strings.Cut(s, "="); ok {
			src, dst = fixtures.Path(t, name), file
		}
		data, err := os.ReadFile(src)
		require.NoError(t, err, "run ./build_plugins.sh first")
		require.NoError(t, os.WriteFile(filepath.Join(dir, dst), data, 0o755))
	}
	return dir
}

func TestRunServesAndStopsOnSIGTERM(t *testing.T) {
	t.Parallel()
	d := start(t, examples)
	addr := <-d.addr
	d.waitLog(t, `msg=ready status="serving golemmeta 1.0.0, kindcount 1.0.0, wasmdigest 1.0.0, wasmtag 1.1.0"`)

	var rep daemon.Report
	require.Equal(t, http.StatusOK, getJSON(t, "http://"+addr+"/v1/health", &rep))
	assert.True(t, rep.Ready)
	assert.Equal(t, d.cmd.Process.Pid, rep.PID)
	assert.Equal(t, []daemon.PluginHealth{
		{Name: "golemmeta", Kind: "transformer", Version: "1.0.0", File: "golemmeta_v1.0.0.so", Backend: "native", State: "serving"},
		{Name: "kindcount", Kind: "oplog-processor", Version: "1.0.0", File: "kindcount_v1.0.0.so", Backend: "native", State: "serving"},
		{Name: "wasmdigest", Kind: "transformer", Version: "1.0.0", File: "wasmdigest_v1.0.0.so", Backend: "native", State: "serving"},
		{Name: "wasmtag", Kind: "transformer", Version: "1.1.0", File: "wasmtag_v1.1.0.so", Backend: "native", State: "serving"},
	}, rep.Plugins)
	assert.Equal(t, map[string]string{"golemmeta": "ok", "kindcount": "ok", "wasmdigest": "ok", "wasmtag": "ok"}, rep.Health)
	assert.Equal(t, http.StatusOK, getJSON(t, "http://"+addr+"/readyz", nil))
	assert.Equal(t, http.StatusOK, getJSON(t, "http://"+addr+"/healthz", nil))

	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, d.exitCode(t), d.text())
	text := d.text()
	assert.Regexp(t, `level=WARN msg=candidate file=wasmtag_v2\.0\.0\.so verdict=rejected .*stage=probe reason="not acceptable on this host`, text)
	assert.Regexp(t, `msg=candidate file=wasmtag_v1\.0\.0\.so verdict="not tried"`, text)
	assert.Regexp(t, `msg="plugin active" plugin=wasmtag version=1\.1\.0 kind=transformer`, text)
	assert.Contains(t, text, "msg=stopping")
}

// TestRunRestartsOnChange: a temporary file does not restart the runner; a
// new version does, with status 75 and what changed in the log.
func TestRunRestartsOnChange(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.0.0.so")
	d := start(t, dir)
	d.waitLog(t, `msg=ready`)

	require.NoError(t, os.WriteFile(filepath.Join(dir, ".wasmtag_v1.1.0.so.tmp"), []byte("partial"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "wasmtag_v1.1.0.so.part"), []byte("partial"), 0o644))
	select {
	case <-d.done:
		t.Fatalf("a temporary file restarted the runner:\n%s", d.text())
	case <-time.After(time.Second): // ten debounce periods
	}

	data, err := os.ReadFile(filepath.Join(examples, "wasmtag_v1.1.0.so"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "wasmtag_v1.1.0.so"), data, 0o755))
	assert.Equal(t, exitcode.Restart, d.exitCode(t), d.text())
	assert.Contains(t, d.text(), `change="added wasmtag_v1.1.0.so"`)
	assert.Contains(t, d.text(), `msg="exiting for a restart" status=75`)
}

// TestRunWithNothingAcceptable: the runner stays up, not ready, and
// restarts when the folder changes.
func TestRunWithNothingAcceptable(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "notacceptable=p_v2.0.0.so")
	d := start(t, dir)
	addr := <-d.addr
	d.waitLog(t, `msg=ready`)
	resp, err := http.Get("http://" + addr + "/readyz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Contains(t, string(body), "no acceptable plugin in "+dir)
	assert.Contains(t, d.text(), "loader: no acceptable version: p")
	var rep daemon.Report
	require.Equal(t, http.StatusOK, getJSON(t, "http://"+addr+"/v1/health", &rep))
	assert.Equal(t, map[string]string{"p": "no acceptable version: p_v2.0.0.so: not acceptable on this host: IsAcceptable() returned false"}, rep.Health)

	require.NoError(t, os.Remove(filepath.Join(dir, "p_v2.0.0.so")))
	assert.Equal(t, exitcode.Restart, d.exitCode(t), d.text())
	assert.Contains(t, d.text(), `change="removed p_v2.0.0.so"`)
}

// TestQuarantineAfterCrashes runs the runner three times on a version that
// crashes the process a second after it is loaded, beside two other
// versions never proven either: two real crashes, each blamed on the
// crashing version alone by the stack line in the crash output; then a
// start that skips it and serves the older version and the bystanders;
// unquarantine lifts it.
func TestQuarantineAfterCrashes(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.1.0.so", "crashafterload=wasmtag_v3.0.0.so", "golemmeta_v1.0.0.so", "wasmdigest_v1.0.0.so")
	state := t.TempDir()
	for i := 1; i <= 2; i++ {
		d := start(t, dir, "--state-dir", state)
		d.waitLog(t, `msg=ready status="serving golemmeta 1.0.0, wasmdigest 1.0.0, wasmtag 3.0.0"`)
		assert.Equal(t, 2, d.exitCode(t), "run %d dies of the plugin's panic:\n%s", i, d.text())
		assert.Contains(t, d.text(), "crashafterload: fatal error after load")
		if i == 2 {
			assert.Regexp(t, `msg="the previous run ended uncleanly" crash_output=true blamed=1`, d.text())
			assert.Regexp(t, `msg="the previous run ended uncleanly with this version loaded" plugin=wasmtag version=3\.0\.0 crashes=1 quarantined=false evidence="its code is in the crash stack: github\.com/soplug/soplug/testdata/fixtures/crashafterload\.Transformer\.func1\.1\(\)"`, d.text())
			assert.NotRegexp(t, `with this version loaded" plugin=(golemmeta|wasmdigest)`, d.text(), "the bystanders are not blamed")
		}
	}
	code, out, _ := runner(t, "plugins", "check", "--plugins", dir, "--state-dir", state)
	assert.Equal(t, exitcode.OK, code)
	assert.Contains(t, out, "the next start blames wasmtag 3.0.0 for the previous run's unclean end (crash 2 in a row; quarantined: true): its code is in the crash stack: github.com/soplug/soplug/testdata/fixtures/crashafterload.Transformer.func1.1()", "check predicts the blame")
	assert.Regexp(t, `wasmtag\s+3\.0\.0\s+-\s+rejected\s+admit\s+wasmtag_v3\.0\.0\.so\s+not admitted: quarantine: quarantined after 2 crashes`, out)
	assert.Regexp(t, `golemmeta\s+1\.0\.0\s+transformer\s+selected`, out)

	d := start(t, dir, "--state-dir", state)
	d.waitLog(t, `msg=ready status="serving golemmeta 1.0.0, wasmdigest 1.0.0, wasmtag 1.1.0"`)
	assert.Regexp(t, `msg=candidate file=wasmtag_v3\.0\.0\.so verdict=rejected .*stage=admit reason="not admitted: quarantine: quarantined after 2 crashes .*crashafterload\.Transformer\.func1\.1`, d.text())
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, d.exitCode(t))

	code, out, _ = runner(t, "plugins", "check", "--plugins", dir, "--state-dir", state)
	assert.Equal(t, exitcode.OK, code)
	assert.Regexp(t, `wasmtag\s+3\.0\.0\s+-\s+rejected\s+admit\s+wasmtag_v3\.0\.0\.so\s+not admitted: quarantine: quarantined after 2 crashes`, out)

	code, out, _ = runner(t, "plugins", "unquarantine", "--state-dir", state, "wasmtag", "v3.0.0")
	assert.Equal(t, exitcode.OK, code)
	assert.Contains(t, out, "wasmtag 3.0.0: quarantine lifted")
	code, out, _ = runner(t, "plugins", "check", "--plugins", dir, "--state-dir", state)
	assert.Equal(t, exitcode.OK, code)
	assert.Regexp(t, `wasmtag\s+3\.0\.0\s+transformer\s+selected`, out)
}

// TestSlowClientsAreCutOff: a client that dribbles its headers is
// disconnected after --read-header-timeout, while others are served, and
// oversized headers are refused.
func TestSlowClientsAreCutOff(t *testing.T) {
	t.Parallel()
	d := start(t, examples, "--read-header-timeout", "300ms")
	addr := <-d.addr
	d.waitLog(t, `msg=ready`)

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")) // and never the blank line
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, getJSON(t, "http://"+addr+"/healthz", nil), "others are served meanwhile")
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = io.ReadAll(conn)
	var ne net.Error
	assert.False(t, errors.As(err, &ne) && ne.Timeout(), "the server closed the slow connection: %v", err)

	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/healthz", nil)
	require.NoError(t, err)
	req.Header.Set("X-Big", strings.Repeat("a", 2*daemon.MaxHeaderBytes))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
}

// TestRunWatchesWhatCounts: writing to a file in the folder that is no
// plugin (a README) does not restart the runner; replacing the target of
// a plugin symlink, in a folder of its own, does.
func TestRunWatchesWhatCounts(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.0.0.so")
	releases := filepath.Join(dir, "releases")
	require.NoError(t, os.Mkdir(releases, 0o755))
	data, err := os.ReadFile(filepath.Join(examples, "wasmtag_v1.1.0.so"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(releases, "wasmtag-1.1.0.so"), data, 0o644))
	require.NoError(t, os.Symlink("releases/wasmtag-1.1.0.so", filepath.Join(dir, "wasmtag_v1.1.0.so")))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README.md"), []byte("# plugins\n"), 0o644))
	d := start(t, dir)
	d.waitLog(t, `msg=ready status="serving wasmtag 1.1.0"`)

	f, err := os.OpenFile(filepath.Join(dir, "README.md"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("more notes\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	select {
	case <-d.done:
		t.Fatalf("a README restarted the runner:\n%s", d.text())
	case <-time.After(time.Second): // ten debounce periods
	}

	// A new build replaces the target by rename, as a deploy tool does.
	tmp := filepath.Join(releases, ".next")
	require.NoError(t, os.WriteFile(tmp, data, 0o644))
	require.NoError(t, os.Rename(tmp, filepath.Join(releases, "wasmtag-1.1.0.so")))
	assert.Equal(t, exitcode.Restart, d.exitCode(t), d.text())
	assert.Contains(t, d.text(), `change="changed wasmtag_v1.1.0.so"`)
}

// TestStaleInstallCopiesRemoved: the copies that installs killed part-way
// left behind are removed at the next start; one an install still holds
// is not.
func TestStaleInstallCopiesRemoved(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.1.0.so")
	stale := filepath.Join(dir, ".wasmtag-install-123.so.tmp")
	require.NoError(t, os.WriteFile(stale, make([]byte, 1<<20), 0o644))
	require.NoError(t, os.WriteFile(stale+".sig", []byte("sig"), 0o644))
	held := filepath.Join(dir, ".wasmtag-install-456.so.tmp")
	require.NoError(t, os.WriteFile(held, []byte("in progress"), 0o644))
	f, err := os.Open(held)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_EX))
	other := filepath.Join(dir, ".notes.tmp")
	require.NoError(t, os.WriteFile(other, []byte("not ours"), 0o644))

	d := start(t, dir)
	d.waitLog(t, `msg=ready`)
	assert.Contains(t, d.text(), `msg="removed the copies of installs that were killed part-way"`)
	assert.NoFileExists(t, stale)
	assert.NoFileExists(t, stale+".sig")
	assert.FileExists(t, held, "an install in progress keeps its copy")
	assert.FileExists(t, other, "only install's own copies are removed")
}

// preparedWithSpare is the log record of a drop's prepare stage that
// checked the one new file with the spare probe child, begun at the
// rename's event.
const preparedWithSpare = `msg="prepared the new selection" took=\S+ selected=1 from_cache=0 checked=1 errors=0 spare_probe=true during_debounce=true`

// renameIn drops the fixture into dir as name the way a deploy does: a
// dotfile copy, then a rename.
func renameIn(t *testing.T, dir, fixture, name string) {
	t.Helper()
	data, err := os.ReadFile(fixtures.Path(t, fixture))
	require.NoError(t, err)
	tmp := filepath.Join(dir, "."+name+".tmp")
	require.NoError(t, os.WriteFile(tmp, data, 0o644))
	require.NoError(t, os.Rename(tmp, filepath.Join(dir, name)))
}

// TestRunPreparesBeforeExit: on a drop, the serving runner checks and
// probes the new set before it exits, and the next runner takes those
// verdicts from the cache in the state directory: it starts no probe
// child. Without the cache (another runner build's, or none), it probes.
func TestRunPreparesBeforeExit(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.1.0.so")
	state := t.TempDir()
	d := start(t, dir, "--state-dir", state, "--log-level", "DEBUG")
	d.waitLog(t, `msg=ready status="serving wasmtag 1.1.0"`)
	assert.Equal(t, 1, strings.Count(d.text(), `msg="probing plugin candidate"`), "a cold start probes")
	d.waitLog(t, `msg="a spare probe child waits for the next change"`)

	renameIn(t, dir, "good-1.2.0", "wasmtag_v1.2.0.so")
	assert.Equal(t, exitcode.Restart, d.exitCode(t), d.text())
	assert.Regexp(t, preparedWithSpare, d.text(),
		"the prepare stage took the spare probe child, begun at the rename's event")
	assert.Regexp(t, `msg="prepared the new selection"(.|\n)*msg="exiting for a restart"`, d.text(), "prepared before the exit")

	next := start(t, dir, "--state-dir", state, "--log-level", "DEBUG")
	next.waitLog(t, `msg=ready status="serving wasmtag 1.2.0"`)
	assert.Zero(t, strings.Count(next.text(), `msg="probing plugin candidate"`), "no probe child:\n%s", next.text())
	assert.Contains(t, next.text(), `msg="plugin verdict from the cache" file=wasmtag_v1.2.0.so`)
	require.NoError(t, next.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, next.exitCode(t))

	// A burst that goes on after the prepare stage begun at its first
	// event (a chmod of the serving file, whose changed ctime misses the
	// cache; then, seen to have begun, a new file written in place): the
	// set is checked again once the burst is over, and that is what the
	// next runner takes. The debounce of 2 s holds the burst open.
	next = start(t, dir, "--state-dir", state, "--log-level", "DEBUG", "--debounce", "2s")
	next.waitLog(t, `msg=ready status="serving wasmtag 1.2.0"`)
	require.NoError(t, os.Chmod(filepath.Join(dir, "wasmtag_v1.2.0.so"), 0o640))
	next.waitLog(t, `msg="probing plugin candidate" file=wasmtag_v1.2.0.so`)
	data, err := os.ReadFile(fixtures.Path(t, "good-2.0.0"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "wasmtag_v2.0.0.so"), data, 0o644))
	assert.Equal(t, exitcode.Restart, next.exitCode(t), next.text())
	assert.Regexp(t, `msg="prepared the new selection" took=\S+ selected=1 .*during_debounce=false`, next.text())
	next = start(t, dir, "--state-dir", state, "--log-level", "DEBUG")
	next.waitLog(t, `msg=ready status="serving wasmtag 2.0.0"`)
	assert.Zero(t, strings.Count(next.text(), `msg="probing plugin candidate"`), "no probe child:\n%s", next.text())
	require.NoError(t, next.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, next.exitCode(t))

	// A cache that is not this runner's is not trusted.
	require.NoError(t, os.WriteFile(filepath.Join(state, daemon.CacheFile), []byte(`{"format":"soplug-verdicts-1","runner":"another","entries":{}}`), 0o640))
	again := start(t, dir, "--state-dir", state, "--log-level", "DEBUG")
	again.waitLog(t, `msg=ready status="serving wasmtag 2.0.0"`)
	assert.Equal(t, 1, strings.Count(again.text(), `msg="probing plugin candidate"`))
	assert.Contains(t, again.text(), `msg="verdict cache of another runner build; ignored"`)
}

// TestRunRefillsTheSpareAfterABurstWithNoChange takes the spare probe child
// in a prepare stage begun at a burst's first event (a chmod that keeps the
// mode: the serving file's ctime changes, so its verdict is checked again,
// while the folder's fingerprint does not) and ends the burst with nothing
// to restart on: a second later a new spare waits, and the next drop's
// prepare stage takes it.
func TestRunRefillsTheSpareAfterABurstWithNoChange(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.1.0.so")
	d := start(t, dir, "--state-dir", t.TempDir(), "--log-level", "DEBUG")
	d.waitLog(t, `msg=ready status="serving wasmtag 1.1.0"`)
	const waiting = `msg="a spare probe child waits for the next change"`
	d.waitLog(t, waiting)
	serving := filepath.Join(dir, "wasmtag_v1.1.0.so")
	fi, err := os.Stat(serving)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(serving, fi.Mode().Perm()))
	d.waitLog(t, `msg="probing plugin candidate" file=wasmtag_v1.1.0.so(.|\n)*`+waiting+`(.|\n)*`+waiting)
	assert.NotContains(t, d.text(), "plugins folder changed", "the burst changed nothing to restart on")
	assert.Equal(t, 2, strings.Count(d.text(), `msg="probing plugin candidate"`), "the cold start's probe, then the spare's")

	renameIn(t, dir, "good-1.2.0", "wasmtag_v1.2.0.so")
	assert.Equal(t, exitcode.Restart, d.exitCode(t), d.text())
	assert.Regexp(t, preparedWithSpare, d.text(),
		"the refilled spare took the drop's probe")
}
