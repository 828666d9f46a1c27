package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/fixtures"
)

// TestWhyNamesTheModule: why on a plugin built against another version of
// a module the runner links says which, in text and JSON. It runs the built
// runner, whose build info records module versions (a test binary's does
// not).
func TestWhyNamesTheModule(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.1.0.so", "otherdep=wasmtag_v9.0.0.so")
	out, err := exec.Command(binary(t), "plugins", "why", "--plugins", dir, "wasmtag", "9.0.0").Output()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, exitcode.NoPlugin, ee.ExitCode())
	text := string(out)
	assert.Regexp(t, `check\s+built like the runner .*failed\s+built differently from the runner: package github.com/hashicorp/go-version differs`, text)
	assert.Contains(t, text, "github.com/hashicorp/go-version: plugin => github.com/hashicorp/go-version v1.7.0, runner v1.9.0")
	assert.Contains(t, text, "verdict: rejected")

	out, _ = exec.Command(binary(t), "plugins", "why", "--json", filepath.Join(dir, "wasmtag_v1.1.0.so")).Output()
	var d struct {
		Acceptable bool
		Kind       string
		Steps      []struct{ Stage, Check, Result string }
	}
	require.NoError(t, json.Unmarshal(out, &d), "%s", out)
	assert.True(t, d.Acceptable)
	assert.Equal(t, "transformer", d.Kind)
	for _, s := range d.Steps {
		assert.Equal(t, "ok", s.Result, "%s %s", s.Stage, s.Check)
	}
}

func TestInstallAndRemoveCommands(t *testing.T) {
	dir := copyPlugins(t, "wasmtag_v1.1.0.so")
	good := fixtures.Path(t, "good-1.2.0")

	code, out, errs := runner(t, "plugins", "install", good, "--plugins", dir, "--name", "wasmtag", "--json")
	require.Equal(t, exitcode.OK, code, "%s%s", out, errs)
	var res struct {
		OK      bool
		File    string
		Version string
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	assert.Equal(t, "wasmtag_v1.2.0.so", res.File)

	code, _, errs = runner(t, "plugins", "install", good, "--plugins", dir, "--name", "wasmtag")
	assert.Equal(t, exitcode.Failure, code)
	assert.Contains(t, errs, "refused, "+dir+" is unchanged: deploy: version already installed")

	code, _, errs = runner(t, "plugins", "install", "--plugins", dir, good)
	assert.Equal(t, exitcode.Usage, code)
	assert.Contains(t, errs, "give --name")

	code, out, _ = runner(t, "plugins", "remove", "--plugins", dir, "wasmtag", "1.2.0")
	assert.Equal(t, exitcode.OK, code)
	assert.Contains(t, out, "the daemon falls back to wasmtag 1.1.0 (wasmtag_v1.1.0.so) at its restart")

	code, _, errs = runner(t, "plugins", "remove", "--plugins", dir, "wasmtag", "1.1.0")
	assert.Equal(t, exitcode.Failure, code)
	assert.Contains(t, errs, "the last acceptable version")
}

// TestInstallUnderAWatchingDaemon: the daemon restarts once onto a version
// placed by install, and never sees the file half-written.
func TestInstallUnderAWatchingDaemon(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.1.0.so")
	d := start(t, dir)
	d.waitLog(t, `msg=ready status="serving wasmtag 1.1.0"`)
	out, err := exec.Command(binary(t), "plugins", "install", "--plugins", dir, "--name", "wasmtag",
		fixtures.Path(t, "good-1.2.0")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, exitcode.Restart, d.exitCode(t), d.text())
	assert.Contains(t, d.text(), `change="added wasmtag_v1.2.0.so"`, "one change: the finished file")

	d2 := start(t, dir)
	d2.waitLog(t, `msg=ready status="serving wasmtag 1.2.0"`)
	assert.NotContains(t, d2.text(), "truncated")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2)
}
