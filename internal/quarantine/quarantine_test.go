package quarantine_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/quarantine"
)

// TestHelperProcess is a daemon run that loads a version and is then killed
// with SIGKILL: it is started by the tests below, not run on its own.
func TestHelperProcess(t *testing.T) {
	dir, file := os.Getenv("QUARANTINE_HELPER_DIR"), os.Getenv("QUARANTINE_HELPER_FILE")
	if dir == "" {
		return
	}
	s := &quarantine.Store{Dir: dir}
	if _, err := s.Begin(); err != nil {
		os.Exit(3)
	}
	if err := s.Loading("p", "2.0.0", file); err != nil {
		os.Exit(4)
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(time.Minute)
}

// crashRun runs the helper: a real process that loads p 2.0.0 and dies.
func crashRun(t *testing.T, dir, file string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "QUARANTINE_HELPER_DIR="+dir, "QUARANTINE_HELPER_FILE="+file)
	err := cmd.Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal(), "the helper died by SIGKILL")
}

func plugin(t *testing.T, dir, file string) string {
	t.Helper()
	p := filepath.Join(dir, file)
	require.NoError(t, os.WriteFile(p, []byte(file), 0o644))
	return p
}

func TestQuarantineAfterTwoCrashes(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	file := plugin(t, plugins, "p_v2.0.0.so")
	s := &quarantine.Store{Dir: state}

	crashRun(t, state, file)
	blamed, err := s.Begin()
	require.NoError(t, err)
	require.Len(t, blamed, 1)
	assert.Equal(t, 1, blamed[0].Crashes)
	require.NoError(t, s.Admit("p", "2.0.0", file), "one crash does not quarantine")

	crashRun(t, state, file)
	_, err = s.Begin()
	require.NoError(t, err)
	err = s.Admit("p", "2.0.0", file)
	require.ErrorIs(t, err, quarantine.ErrQuarantined)
	assert.Contains(t, err.Error(), "after 2 crashes")
	assert.Contains(t, err.Error(), "runner plugins unquarantine p 2.0.0")

	recs, err := s.Records()
	require.NoError(t, err)
	require.Len(t, recs, 1)
	assert.True(t, recs[0].Quarantined(quarantine.DefaultThreshold))

	found, err := s.Lift("p", "2.0.0")
	require.NoError(t, err)
	assert.True(t, found)
	assert.NoError(t, s.Admit("p", "2.0.0", file))
}

func TestNewFileLiftsQuarantine(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	file := plugin(t, plugins, "p_v2.0.0.so")
	s := &quarantine.Store{Dir: state, Threshold: 1}
	crashRun(t, state, file)
	_, err := s.Begin()
	require.NoError(t, err)
	require.ErrorIs(t, s.Admit("p", "2.0.0", file), quarantine.ErrQuarantined)

	require.NoError(t, os.Remove(file))
	file = plugin(t, plugins, "p_v2.0.0.so") // a new copy: new inode and time
	assert.NoError(t, s.Admit("p", "2.0.0", file))
}

// TestProvenVersionsAreNotBlamed: a crash in a run that loaded a proven
// version and a new one blames only the new one; a crash with only proven
// versions loaded blames them all.
func TestProvenVersionsAreNotBlamed(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	old, fresh := plugin(t, plugins, "q_v1.0.0.so"), plugin(t, plugins, "p_v2.0.0.so")
	s := &quarantine.Store{Dir: state}

	_, err := s.Begin()
	require.NoError(t, err)
	require.NoError(t, s.Loading("q", "1.0.0", old))
	require.NoError(t, s.Clean())

	_, err = s.Begin()
	require.NoError(t, err)
	require.NoError(t, s.Loading("q", "1.0.0", old))
	require.NoError(t, s.Loading("p", "2.0.0", fresh))
	blamed, err := s.Begin() // the previous run never called Clean
	require.NoError(t, err)
	require.Len(t, blamed, 1)
	assert.Equal(t, "p", blamed[0].Name)

	require.NoError(t, s.Loading("q", "1.0.0", old))
	blamed, err = s.Begin()
	require.NoError(t, err)
	require.Len(t, blamed, 1)
	assert.Equal(t, "q", blamed[0].Name, "with no unproven version loaded, the proven one is blamed")
}

func TestCleanRunResetsCrashes(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	file := plugin(t, plugins, "p_v2.0.0.so")
	s := &quarantine.Store{Dir: state}
	crashRun(t, state, file)
	_, err := s.Begin()
	require.NoError(t, err)
	require.NoError(t, s.Loading("p", "2.0.0", file))
	require.NoError(t, s.Clean())
	crashRun(t, state, file)
	_, err = s.Begin()
	require.NoError(t, err)
	assert.NoError(t, s.Admit("p", "2.0.0", file), "the crashes were not in a row")
}

func TestDisabledStoreIsANoOp(t *testing.T) {
	for _, s := range []*quarantine.Store{nil, {}} {
		blamed, err := s.Begin()
		assert.NoError(t, err)
		assert.Empty(t, blamed)
		assert.NoError(t, s.Loading("p", "1.0.0", "/nonexistent"))
		assert.NoError(t, s.Admit("p", "1.0.0", "/nonexistent"))
		assert.NoError(t, s.Clean())
	}
}

func TestCorruptStateFile(t *testing.T) {
	state := t.TempDir()
	path := filepath.Join(state, "quarantine.json")
	require.NoError(t, os.WriteFile(path, []byte("{not json"), 0o600))
	_, err := (&quarantine.Store{Dir: state}).Begin()
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "not valid JSON")
	data, _ := os.ReadFile(path)
	assert.Equal(t, "{not json", string(data), "the bad file is left for the operator")
}
