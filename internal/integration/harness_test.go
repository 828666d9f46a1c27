package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// systemd is a real systemd booted as PID 1 of private namespaces by
// testdata/sdns.sh, with units only from one folder. It is stopped by the
// exact host PID of that PID 1 when the test ends, whatever happens; a
// reaper in the script stops it after 15 minutes if the test process dies.
type systemd struct {
	t      testing.TB
	script string
	home   string
	pid    int
}

// canBoot says why systemd cannot be booted here, or "" when it can.
func canBoot() string {
	if os.Getuid() != 0 {
		return "booting systemd in private namespaces needs root"
	}
	for _, bin := range []string{"/lib/systemd/systemd", "/usr/bin/systemctl"} {
		if _, err := os.Stat(bin); err != nil {
			return bin + " is not installed"
		}
	}
	for _, tool := range []string{"unshare", "nsenter", "script", "setpriv", "findmnt"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed"
		}
	}
	return ""
}

// bootSystemd boots systemd on the units in unitDir.
func bootSystemd(t testing.TB, unitDir, home string) *systemd {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("testdata", "sdns.sh"))
	require.NoError(t, err)
	s := &systemd{t: t, script: script, home: home}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script, "start", unitDir)
	cmd.Env = append(os.Environ(), "SDNS_HOME="+home, "SDNS_MAX_LIFETIME=900")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if pid, perr := strconv.Atoi(strings.TrimSpace(stdout.String())); perr == nil {
		s.pid = pid
		t.Cleanup(s.stop)
	}
	require.NoError(t, err, "booting systemd:\n%s", stderr.String())
	require.NotZero(t, s.pid, "no PID from sdns.sh start:\n%s\n%s", stdout.String(), stderr.String())
	t.Logf("systemd booted as host pid %d", s.pid)
	return s
}

func (s *systemd) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{s.script}, args...)...)
	cmd.Env = append(os.Environ(), "SDNS_HOME="+s.home)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ctl runs systemctl inside the instance.
func (s *systemd) ctl(args ...string) string {
	s.t.Helper()
	out, err := s.run(append([]string{"ctl", strconv.Itoa(s.pid)}, args...)...)
	require.NoError(s.t, err, "systemctl %s: %s", strings.Join(args, " "), out)
	return out
}

// show returns the unit's properties.
func (s *systemd) show(unit string, props ...string) map[string]string {
	s.t.Helper()
	out := s.ctl("show", "-p", strings.Join(props, ","), unit)
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// nrestarts returns the unit's NRestarts.
func (s *systemd) nrestarts(unit string) int {
	s.t.Helper()
	n, err := strconv.Atoi(s.show(unit, "NRestarts")["NRestarts"])
	require.NoError(s.t, err)
	return n
}

func (s *systemd) stop() {
	if s.pid == 0 {
		return
	}
	out, err := s.run("stop", strconv.Itoa(s.pid))
	if err != nil {
		s.t.Errorf("stopping systemd pid %d: %v\n%s", s.pid, err, out)
	}
	s.pid = 0
}

// console returns systemd's console log.
func (s *systemd) console() string {
	out, _ := s.run("logs", strconv.Itoa(s.pid))
	return out
}

// verify runs systemd-analyze verify on units, isolated from the host's /run.
func verifyUnits(t *testing.T, units ...string) {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("testdata", "sdns.sh"))
	require.NoError(t, err)
	out, err := exec.Command("bash", append([]string{script, "verify"}, units...)...).CombinedOutput()
	require.NoError(t, err, "systemd-analyze verify: %s", out)
	require.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify has warnings")
	// The exposure score of the service stays at 2.0 or below (3.2 before
	// its system call filter).
	for _, u := range units {
		if !strings.HasSuffix(u, ".service") {
			continue
		}
		out, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--threshold=20", u).CombinedOutput()
		assert.NoError(t, err, "systemd-analyze security: exposure above 2.0:\n%s", out)
		assert.Contains(t, string(out), "SystemCallFilter=~@privileged", "the filter is seen")
	}
}

func eventually(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s (last: %s)", what, timeout, last)
}
