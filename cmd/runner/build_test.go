package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/exitcode"
)

func TestBuildCommandsUsage(t *testing.T) {
	full := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(full, "x"), nil, 0o644))
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"build: no module", []string{"plugins", "build"}, exitcode.Usage, "usage: runner plugins build"},
		{"build: two modules", []string{"plugins", "build", "a", "b"}, exitcode.Usage, "usage: runner plugins build"},
		{"build: no go.mod", []string{"plugins", "build", "--out", t.TempDir(), t.TempDir()}, exitcode.Failure, "has no go.mod"},
		{"new: no name", []string{"plugins", "new"}, exitcode.Usage, "usage: runner plugins new"},
		{"new: bad name", []string{"plugins", "new", "a b", t.TempDir()}, exitcode.Usage, "cannot name a plugin"},
		{"new: bad kind", []string{"plugins", "new", "--kind", "filter", "p", t.TempDir()}, exitcode.Usage, `kind "filter"`},
		{"new: folder not empty", []string{"plugins", "new", "p", full}, exitcode.Usage, "holds 1 file(s)"},
		{"contract: no folder", []string{"plugins", "contract"}, exitcode.Usage, "usage: runner plugins contract"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runner(t, tc.args...)
			assert.Equal(t, tc.code, code, stderr)
			assert.Contains(t, stderr, tc.msg)
		})
	}
}

func TestContractCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "contract")
	code, out, stderr := runner(t, "plugins", "contract", dir)
	require.Equal(t, exitcode.OK, code, stderr)
	assert.Contains(t, out, "wrote the contract module github.com/soplug/soplug into "+dir)
	for _, f := range []string{"go.mod", "go.sum", "contract/contract.go", "contract/serve/serve.go", "contract/golem/golem.go"} {
		assert.FileExists(t, filepath.Join(dir, f))
	}
	assert.NoFileExists(t, filepath.Join(dir, "contract", "example_test.go"), "tests are not part of it")
}

// TestNewBuildCommands: the runner binary's plugins new, then plugins build
// --json, then plugins check of the result.
func TestNewBuildCommands(t *testing.T) {
	bin := binary(t)
	mod := filepath.Join(t.TempDir(), "greeter")
	out, err := exec.Command(bin, "plugins", "new", "greeter", mod).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "next: runner plugins build --test --out dist "+mod)

	dist := t.TempDir()
	cmd := exec.Command(bin, "plugins", "build", "--json", "--out", dist, mod)
	out, err = cmd.Output()
	require.NoError(t, err, "%s", out)
	var rep struct {
		OK        bool
		File      string
		Name      string
		Version   string
		Toolchain string
		Flags     []string
	}
	require.NoError(t, json.Unmarshal(out, &rep), "%s", out)
	assert.True(t, rep.OK)
	assert.Equal(t, filepath.Join(dist, "greeter_v0.1.0.so"), rep.File)
	assert.Contains(t, rep.Flags, "-trimpath")

	out, err = exec.Command(bin, "plugins", "check", "--plugins", dist, "--state-dir", t.TempDir()).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "selected: greeter 0.1.0 (transformer)")

	// A second build of the same version replaces it: a build folder is
	// not a plugins folder.
	out, err = exec.Command(bin, "plugins", "build", "--out", dist, mod).CombinedOutput()
	require.NoError(t, err, "%s", out)

	// A runner that is not there is EX_NOINPUT.
	err = exec.Command(bin, "plugins", "build", "--runner", filepath.Join(dist, "nope"), "--out", dist, mod).Run()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee))
	assert.Equal(t, exitcode.NoInput, ee.ExitCode())
}
