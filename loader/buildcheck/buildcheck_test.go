package buildcheck_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/fixtures"
	"github.com/soplug/soplug/loader/buildcheck"
)

func read(t *testing.T, name string) *buildcheck.Build {
	t.Helper()
	if name == "othergo" && !fixtures.Built(name) {
		t.Skip("build_plugins.sh could not fetch the other Go toolchain")
	}
	b, err := buildcheck.Read(fixtures.Path(t, name))
	require.NoError(t, err)
	return b
}

// runnerPath is the runner, built by TestMain: a test binary records no
// module versions, the runner does.
var runnerPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "buildcheck-test-")
	if err != nil {
		panic(err)
	}
	runnerPath = filepath.Join(dir, "runner")
	if out, err := exec.Command("go", append(append([]string{"build"}, fixtures.BuildFlags...), "-o", runnerPath, filepath.Join(fixtures.Root(), "cmd", "runner"))...).CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func self(t *testing.T) *buildcheck.Build {
	t.Helper()
	b, err := buildcheck.Read(runnerPath)
	require.NoError(t, err)
	require.NotEmpty(t, b.PkgHashes, "the runner links the plugin package, so it carries package hashes")
	require.NotEmpty(t, b.Info.Deps)
	return b
}

func TestCompare(t *testing.T) {
	runner := self(t)
	cases := []struct {
		fixture    string
		compatible bool
		diffs      []string
		summary    string
	}{
		{"good-1.0.0", true, nil, ""},
		{"otherdep", false,
			[]string{"github.com/hashicorp/go-version: plugin => github.com/hashicorp/go-version v1.7.0, runner v1.9.0"},
			"package github.com/hashicorp/go-version differs (github.com/hashicorp/go-version: plugin => github.com/hashicorp/go-version v1.7.0, runner v1.9.0)"},
		{"othercontract", false, nil, "package github.com/soplug/soplug/contract differs"},
		{"othergo", false, []string{"go: plugin go1.25.5, runner go1.26.8"},
			"built with another Go toolchain or other flags (go: plugin go1.25.5, runner go1.26.8)"},
	}
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			rep := buildcheck.Compare(read(t, tc.fixture), runner)
			assert.Positive(t, rep.Checked, "shared packages were compared")
			assert.Equal(t, tc.compatible, rep.Compatible(), "%+v", rep.Conflicts)
			var diffs []string
			for _, d := range rep.Differences {
				diffs = append(diffs, d.String())
			}
			for _, d := range tc.diffs {
				assert.Contains(t, diffs, d)
			}
			assert.Contains(t, rep.Summary(), tc.summary)
		})
	}
}

// TestCompareSettings: a build setting that changes code, such as -race,
// is named with both values.
func TestCompareSettings(t *testing.T) {
	runner := self(t)
	plugin := read(t, "good-1.0.0")
	info := *plugin.Info
	info.Settings = append([]debug.BuildSetting(nil), plugin.Info.Settings...)
	for i, s := range info.Settings {
		if s.Key == "CGO_ENABLED" {
			info.Settings[i].Value = "0"
		}
	}
	info.Settings = append(info.Settings, debug.BuildSetting{Key: "-race", Value: "true"})
	hashes := map[string]string{}
	for k, v := range plugin.PkgHashes {
		hashes[k] = v
	}
	hashes["runtime"] = "0000"
	rep := buildcheck.Compare(&buildcheck.Build{Info: &info, PkgHashes: hashes}, runner)
	require.False(t, rep.Compatible())
	assert.Contains(t, rep.Summary(), "CGO_ENABLED: plugin 0, runner 1")
	assert.Contains(t, rep.Summary(), "-race: plugin true, runner false")
	assert.Equal(t, "runtime", rep.Conflicts[0].Package)
}

func TestReadRefusesNonGo(t *testing.T) {
	_, err := buildcheck.Read(fixtures.Path(t, "clib"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "clib.so: no Go build info")
}

// TestComparePathDifference: the same module version, toolchain and
// settings, and still another hash: without -trimpath on either side that
// is the checkout's path, and the reason says so; with it, it does not.
func TestComparePathDifference(t *testing.T) {
	info := func(trimpath bool) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.26.8", Path: "github.com/soplug/soplug/cmd/runner",
			Main: debug.Module{Path: "github.com/soplug/soplug", Version: "(devel)"}}
		if trimpath {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: "-trimpath", Value: "true"})
		}
		return bi
	}
	for _, trimpath := range []bool{false, true} {
		plugin := &buildcheck.Build{Info: info(trimpath), PkgHashes: map[string]string{"github.com/soplug/soplug/contract": "aa"}}
		runner := &buildcheck.Build{Info: info(trimpath), PkgHashes: map[string]string{"github.com/soplug/soplug/contract": "bb"}}
		rep := buildcheck.Compare(plugin, runner)
		require.Len(t, rep.Conflicts, 1)
		if trimpath {
			assert.Contains(t, rep.Summary(), "the same module version built from other sources?")
		} else {
			assert.Contains(t, rep.Summary(), "neither was built with -trimpath: the package hashes then hold the path of the checkout")
		}
	}
}

// TestCompareThroughADependency: a module's new version changes its own
// packages and every package above them. The summary leads with the
// package whose module differs, and a package whose module matches names
// the modules that differ beneath it, not "other sources".
func TestCompareThroughADependency(t *testing.T) {
	info := func(sys string) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Path: "github.com/soplug/soplug/cmd/runner",
			Main:     debug.Module{Path: "github.com/soplug/soplug", Version: "(devel)"},
			Deps:     []*debug.Module{{Path: "github.com/fsnotify/fsnotify", Version: "v1.10.1"}, {Path: "golang.org/x/sys", Version: sys}},
			Settings: []debug.BuildSetting{{Key: "-trimpath", Value: "true"}}}
	}
	plugin := &buildcheck.Build{Info: info("v0.49.0"), PkgHashes: map[string]string{
		"github.com/fsnotify/fsnotify/internal": "a1", "golang.org/x/sys/unix": "a2", "strings": "s"}}
	runner := &buildcheck.Build{Info: info("v0.48.0"), PkgHashes: map[string]string{
		"github.com/fsnotify/fsnotify/internal": "b1", "golang.org/x/sys/unix": "b2", "strings": "s"}}
	rep := buildcheck.Compare(plugin, runner)
	require.Len(t, rep.Conflicts, 2)
	assert.Equal(t, "package golang.org/x/sys/unix differs (golang.org/x/sys: plugin v0.49.0, runner v0.48.0), and 1 more package(s)", rep.Summary())
	assert.Equal(t, "package github.com/fsnotify/fsnotify/internal differs (its own module matches; through a package it imports from a module that differs: golang.org/x/sys: plugin v0.49.0, runner v0.48.0)",
		rep.Conflicts[0].String())
}
