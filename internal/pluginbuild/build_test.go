package pluginbuild_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/fixtures"
	"github.com/soplug/soplug/internal/pluginbuild"
	"github.com/soplug/soplug/loader/buildcheck"
)

// Two runner binaries built from the same sources in two folders: the
// checkout's, and a copy elsewhere. Built once, by TestMain.
var runners struct {
	here, elsewhere string
}

func TestMain(m *testing.M) {
	code, err := buildRunners()
	if err != nil {
		os.Stderr.WriteString("pluginbuild tests: " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(code(m))
}

func buildRunners() (func(*testing.M) int, error) {
	dir, err := os.MkdirTemp("", "pluginbuild-test-")
	if err != nil {
		return nil, err
	}
	root := fixtures.Root()
	copyDir := filepath.Join(dir, "elsewhere", "soplug")
	if err := copySources(root, copyDir); err != nil {
		return nil, err
	}
	runners.here = filepath.Join(dir, "runner-here")
	runners.elsewhere = filepath.Join(dir, "runner-elsewhere")
	for bin, src := range map[string]string{runners.here: root, runners.elsewhere: copyDir} {
		cmd := exec.Command("go", append(append([]string{"build"}, fixtures.BuildFlags...), "-o", bin, "./cmd/runner")...)
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, errors.New(string(out))
		}
	}
	return func(m *testing.M) int {
		defer os.RemoveAll(dir)
		return m.Run()
	}, nil
}

// copySources copies the module's Go sources and embedded files (templates,
// the contract archive), go.mod and go.sum (no
// testdata, no built plugins) from root to dst.
func copySources(root, dst string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "plugins" || d.Name() == "plugins-exec") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") && rel != "go.mod" && rel != "go.sum" && !strings.HasSuffix(path, ".tmpl") && !strings.HasSuffix(path, ".txtar") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
}

// runRunner runs a runner binary and returns its exit status and output.
func runRunner(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	require.NoError(t, err)
	return 0, string(out)
}

// selects asserts that every runner selects name from the folder dir.
func selects(t *testing.T, dir, name string) {
	t.Helper()
	for _, bin := range []string{runners.here, runners.elsewhere} {
		code, out := runRunner(t, bin, "plugins", "check", "--plugins", dir, "--state-dir", t.TempDir())
		assert.Equal(t, 0, code, "%s plugins check:\n%s", bin, out)
		assert.Contains(t, out, "selected: "+name+" ", "%s plugins check:\n%s", bin, out)
	}
}

// snapshot maps every file under dir to its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		m[path] = string(data)
		return err
	}))
	return m
}

func TestRunnersFromTwoFoldersAreOneBuild(t *testing.T) {
	here, err := buildcheck.Read(runners.here)
	require.NoError(t, err)
	elsewhere, err := buildcheck.Read(runners.elsewhere)
	require.NoError(t, err)
	require.NotEmpty(t, here.PkgHashes)
	assert.Equal(t, here.PkgHashes["github.com/soplug/soplug/contract"], elsewhere.PkgHashes["github.com/soplug/soplug/contract"])
	assert.Equal(t, here.PkgHashes, elsewhere.PkgHashes, "-trimpath makes the checkout's path irrelevant")
}

// TestNewThenBuild: plugins new, then plugins build against a runner built
// in another folder, gives a file both runners select; the team's folder is
// left as it was.
func TestNewThenBuild(t *testing.T) {
	for _, tc := range []struct {
		kind, name, wantKind string
		exec                 bool
	}{
		{pluginbuild.KindTransformer, "hello", "transformer", false},
		{pluginbuild.KindOplog, "journal", "oplog-processor", false},
		{pluginbuild.KindTransformer, "remote", "transformer", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			work := t.TempDir()
			mod := filepath.Join(work, "team", tc.name)
			code, out := runRunner(t, runners.here, "plugins", "new", "--kind", tc.kind, tc.name, mod)
			require.Equal(t, 0, code, out)
			before := snapshot(t, mod)
			for _, f := range []string{"go.mod", "plugin.go", "plugin_test.go", "main_so.go", "main_exec.go"} {
				assert.Contains(t, before, filepath.Join(mod, f))
			}

			dist := filepath.Join(work, "dist")
			var log strings.Builder
			res, err := pluginbuild.Build(context.Background(), pluginbuild.Options{
				Module: mod, Runner: runners.elsewhere, Out: dist, Exec: tc.exec, Test: true, Log: &log,
			})
			require.NoError(t, err, log.String())
			want := tc.name + "_v0.1.0.so"
			if tc.exec {
				want = tc.name + "_v0.1.0"
			}
			assert.Equal(t, filepath.Join(dist, want), res.File)
			assert.Equal(t, tc.wantKind, res.Kind)
			assert.Equal(t, "0.1.0", res.Version)
			assert.Contains(t, log.String(), "ok  \texample.com/"+tc.name, "the module's test ran")
			assert.Equal(t, before, snapshot(t, mod), "the team's files are untouched")
			selects(t, dist, tc.name)
		})
	}
}

// writeModule writes a plugin module made by New, with go.mod replaced by
// gomod and extra files.
func writeModule(t *testing.T, name, gomod string, extra map[string]string) string {
	t.Helper()
	mod := filepath.Join(t.TempDir(), name)
	_, err := pluginbuild.New(pluginbuild.NewOptions{Name: name, Dir: mod})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(mod, "go.mod"), []byte(gomod), 0o644))
	for f, s := range extra {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(mod, f)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(mod, f), []byte(s), 0o644))
	}
	return mod
}

// runnerDep is the version of module path the test runners link.
func runnerDep(t *testing.T, path string) string {
	t.Helper()
	b, err := buildcheck.Read(runners.elsewhere)
	require.NoError(t, err)
	for _, d := range b.Info.Deps {
		if d.Path == path {
			return d.Version
		}
	}
	t.Fatalf("the runner does not link %s", path)
	return ""
}

const useGoVersion = `package main

import goversion "github.com/hashicorp/go-version"

var _ = goversion.Must(goversion.NewVersion("1.0.0"))
`

// TestBuildRaisesOlderModule: a module pinning an older go-version than the
// runner links gets the runner's, and loads.
// TestBuildKeepsUnsharedModules: a team's module that the runner does not
// link (wazero: soplug's tests use v1.12) keeps the team's version, in the
// build and in the module's own go build; only what plugins share with
// the runner is pinned.
func TestBuildKeepsUnsharedModules(t *testing.T) {
	mod := writeModule(t, "keeps", "module example.com/keeps\n\ngo 1.26\n\nrequire github.com/tetratelabs/wazero v1.8.0\n",
		map[string]string{"wz.go": "package main\n\nimport _ \"github.com/tetratelabs/wazero\"\n"})
	res, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.here, Out: t.TempDir()})
	require.NoError(t, err)
	assert.Empty(t, res.Raised)
	b, err := buildcheck.Read(res.File)
	require.NoError(t, err)
	var got string
	for _, d := range b.Info.Deps {
		if d.Path == "github.com/tetratelabs/wazero" {
			got = d.Version
		}
	}
	assert.Equal(t, "v1.8.0", got, "the team's version, not soplug's")
}

// TestExecBuildReportsRaises: an out-of-process build shares only the
// contract with the runner; a requirement the contract needs newer
// (go-hclog, through go-plugin) is raised and reported, not silently.
func TestExecBuildReportsRaises(t *testing.T) {
	mod := writeModule(t, "remote", "module example.com/remote\n\ngo 1.26\n\nrequire github.com/hashicorp/go-hclog v1.6.2\n",
		map[string]string{"h.go": "package main\n\nimport _ \"github.com/hashicorp/go-hclog\"\n"})
	res, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.here, Out: t.TempDir(), Exec: true})
	require.NoError(t, err)
	assert.Equal(t, []pluginbuild.Change{{Path: "github.com/hashicorp/go-hclog", From: "v1.6.2", To: "v1.6.3", Why: "required by the contract"}}, res.Raised)
}

func TestBuildRaisesOlderModule(t *testing.T) {
	mod := writeModule(t, "pinned", "module example.com/pinned\n\ngo 1.26\n\nrequire github.com/hashicorp/go-version v1.7.0\n",
		map[string]string{"v.go": useGoVersion})
	dist := t.TempDir()
	res, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.elsewhere, Out: dist})
	require.NoError(t, err)
	assert.Equal(t, []pluginbuild.Change{{Path: "github.com/hashicorp/go-version", From: "v1.7.0", To: runnerDep(t, "github.com/hashicorp/go-version"), Why: "the runner's version"}}, res.Raised)
	selects(t, dist, "pinned")
	gomod, err := os.ReadFile(filepath.Join(mod, "go.mod"))
	require.NoError(t, err)
	assert.Contains(t, string(gomod), "v1.7.0", "the team's go.mod is unchanged")
}

// TestBuildRefusesNewerModule: a module needing a newer version of a module
// the runner links is refused before building, with both versions.
func TestBuildRefusesNewerModule(t *testing.T) {
	mod := writeModule(t, "ahead", "module example.com/ahead\n\ngo 1.26\n\nrequire github.com/hashicorp/go-version v1.99.0\n\nreplace github.com/hashicorp/go-version v1.99.0 => ./goversion\n",
		map[string]string{
			"v.go":                 useGoVersion,
			"goversion/go.mod":     "module github.com/hashicorp/go-version\n\ngo 1.20\n",
			"goversion/version.go": "package version\n\ntype Version struct{}\n\nfunc NewVersion(string) (*Version, error) { return &Version{}, nil }\n\nfunc Must(v *Version, _ error) *Version { return v }\n",
		})
	dist := t.TempDir()
	var log strings.Builder
	_, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.elsewhere, Out: dist, Log: &log})
	require.ErrorIs(t, err, pluginbuild.ErrNewerModule)
	rv := runnerDep(t, "github.com/hashicorp/go-version")
	for _, s := range []string{"github.com/hashicorp/go-version", "needs v1.99.0", "required by example.com/ahead", "the runner links " + rv,
		"require github.com/hashicorp/go-version " + rv + " in " + mod + "/go.mod", "build a runner"} {
		assert.Contains(t, err.Error(), s)
	}
	assert.NotContains(t, log.String(), "wrote")
	entries, _ := os.ReadDir(dist)
	assert.Empty(t, entries, "nothing is written")
}

// TestBuildRefusesNewerIndirectModule: when a dependency of the plugin is
// what requires the newer version, the advice is to move that dependency:
// a requirement in the plugin's go.mod cannot go below it.
func TestBuildRefusesNewerIndirectModule(t *testing.T) {
	mod := writeModule(t, "behind", "module example.com/behind\n\ngo 1.26\n\nrequire example.com/dep v1.0.0\n\n"+
		"replace example.com/dep v1.0.0 => ./dep\n\nreplace github.com/hashicorp/go-version v1.99.0 => ./goversion\n",
		map[string]string{
			"d.go":                 "package main\n\nimport _ \"example.com/dep\"\n",
			"dep/go.mod":           "module example.com/dep\n\ngo 1.20\n\nrequire github.com/hashicorp/go-version v1.99.0\n",
			"dep/dep.go":           "package dep\n\nimport _ \"github.com/hashicorp/go-version\"\n",
			"goversion/go.mod":     "module github.com/hashicorp/go-version\n\ngo 1.20\n",
			"goversion/version.go": "package version\n",
		})
	_, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.here, Out: t.TempDir()})
	require.ErrorIs(t, err, pluginbuild.ErrNewerModule)
	assert.Contains(t, err.Error(), "required by example.com/dep@v1.0.0")
	assert.Contains(t, err.Error(), "use a version of example.com/dep@v1.0.0 that requires at most "+runnerDep(t, "github.com/hashicorp/go-version")+" of it (go get example.com/dep@VERSION)")
	assert.NotContains(t, err.Error(), "require github.com/hashicorp/go-version", "not advice that cannot work")
}

// TestHandBuiltIsExplained: a module built by hand against a copy of the
// contract (a replaced module) does not load, and why says what to do.
func TestHandBuiltIsExplained(t *testing.T) {
	mod := writeModule(t, "byhand", "module example.com/byhand\n\ngo 1.26\n\nrequire github.com/soplug/soplug v0.0.0\n\nreplace github.com/soplug/soplug => ./contract\n", nil)
	require.NoError(t, pluginbuild.WriteContract(filepath.Join(mod, "contract")))
	dir := t.TempDir()
	file := filepath.Join(dir, "byhand_v0.1.0.so")
	cmd := exec.Command("go", "build", "-trimpath", "-buildmode=plugin", "-o", file, ".")
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "CGO_ENABLED=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)

	code, why := runRunner(t, runners.elsewhere, "plugins", "why", "--state-dir", t.TempDir(), file)
	assert.Equal(t, 1, code, why)
	assert.Contains(t, why, "package github.com/soplug/soplug/contract differs")
	assert.Contains(t, why, "runner plugins build")

	// The same module through plugins build loads: the tool's contract wins
	// over the module's own replace.
	res, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.elsewhere, Out: t.TempDir()})
	require.NoError(t, err)
	selects(t, filepath.Dir(res.File), "byhand")
}

// TestBuildRefusals: what Build refuses before it runs the go command.
func TestBuildRefusals(t *testing.T) {
	good := writeModule(t, "good", "module example.com/good\n\ngo 1.26\n", nil)
	notGo := filepath.Join(t.TempDir(), "runner")
	require.NoError(t, os.WriteFile(notGo, []byte("#!/bin/sh\n"), 0o755))
	for _, tc := range []struct {
		name string
		o    pluginbuild.Options
		want error
		msg  string
	}{
		{"no module", pluginbuild.Options{Runner: runners.here}, pluginbuild.ErrModule, "no module folder"},
		{"no go.mod", pluginbuild.Options{Runner: runners.here, Module: t.TempDir()}, pluginbuild.ErrModule, "has no go.mod"},
		{"runner not Go", pluginbuild.Options{Runner: notGo, Module: good}, pluginbuild.ErrRunner, "not a Go binary"},
		{"runner missing", pluginbuild.Options{Runner: filepath.Join(t.TempDir(), "nope"), Module: good}, pluginbuild.ErrRunner, "nope"},
		{"bad name", pluginbuild.Options{Runner: runners.here, Module: good, Name: "a b"}, pluginbuild.ErrModule, "cannot name a plugin"},
		{"newer go", pluginbuild.Options{Runner: runners.here, Module: writeModule(t, "future", "module example.com/future\n\ngo 1.99\n", nil)}, pluginbuild.ErrModule, "needs go 1.99"},
		{"soplug itself", pluginbuild.Options{Runner: runners.here, Module: fixtures.Root()}, pluginbuild.ErrModule, "not a plugin module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Out = t.TempDir()
			_, err := pluginbuild.Build(context.Background(), tc.o)
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

// TestNewIsAnOrdinaryModule: in what runner plugins new writes, the go
// command works as in any Go repository, with no go.work and no hand edit:
// go build, go vet, go test and go mod tidy succeed, and leave go.mod and
// go.sum as they were.
func TestNewIsAnOrdinaryModule(t *testing.T) {
	for _, kind := range []string{pluginbuild.KindTransformer, pluginbuild.KindOplog} {
		t.Run(kind, func(t *testing.T) {
			mod := filepath.Join(t.TempDir(), "team")
			code, out := runRunner(t, runners.here, "plugins", "new", "--kind", kind, "team", mod)
			require.Equal(t, 0, code, out)
			assert.Contains(t, out, "(go mod tidy): go build, test and vet ./... work there")
			read := func(f string) string {
				data, err := os.ReadFile(filepath.Join(mod, f))
				require.NoError(t, err)
				return string(data)
			}
			gomod, gosum := read("go.mod"), read("go.sum")
			for _, args := range [][]string{{"build", "./..."}, {"vet", "./..."}, {"test", "./..."}, {"mod", "tidy"}} {
				cmd := exec.Command("go", args...)
				cmd.Dir = mod
				cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
				if args[0] == "mod" {
					cmd.Env = append(os.Environ(), "GOWORK=off")
				}
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, "go %v: %s", args, out)
			}
			assert.Equal(t, gomod, read("go.mod"), "unchanged")
			assert.Equal(t, gosum, read("go.sum"), "unchanged")
		})
	}
}

// TestBuildLayouts: a plugin's main package anywhere in the module builds
// with Pkg (and is named after it); a module with no root package, a Pkg
// that is not main or not in the module, and a vendor/ folder are refused
// with what to do.
func TestBuildLayouts(t *testing.T) {
	mod := writeModule(t, "team", "module example.com/team\n\ngo 1.26\n", nil)
	require.NoError(t, os.MkdirAll(filepath.Join(mod, "cmd", "stamp"), 0o755))
	for _, f := range []string{"plugin.go", "main_so.go", "main_exec.go", "plugin_test.go"} {
		require.NoError(t, os.Rename(filepath.Join(mod, f), filepath.Join(mod, "cmd", "stamp", f)))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(mod, "internal", "lib"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(mod, "internal", "lib", "lib.go"), []byte("package lib\n"), 0o644))

	res, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.here, Out: t.TempDir(), Pkg: "./cmd/stamp"})
	require.NoError(t, err)
	assert.Equal(t, "stamp_v0.1.0.so", filepath.Base(res.File), "named after its package")

	for _, tc := range []struct{ name, pkg, msg string }{
		{"no root package", "", "has no Go files at its root: give the plugin's main package with --pkg (e.g. --pkg ./cmd/NAME)"},
		{"not main", "./internal/lib", "./internal/lib in " + mod + " is package lib: a plugin is built from a main package"},
		{"outside the module", "../elsewhere", "--pkg ../elsewhere is not a folder inside the module"},
		{"missing", "./cmd/nope", "--pkg ./cmd/nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.here, Out: t.TempDir(), Pkg: tc.pkg})
			require.ErrorIs(t, err, pluginbuild.ErrModule)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
	require.NoError(t, os.MkdirAll(filepath.Join(mod, "vendor"), 0o755))
	_, err = pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.here, Out: t.TempDir(), Pkg: "./cmd/stamp"})
	require.ErrorIs(t, err, pluginbuild.ErrModule)
	assert.Contains(t, err.Error(), "has a vendor/ folder")
}

// olderRelease is a commit of this repository from before the runner
// linked nats.go: a runner release a fleet may still run.
const olderRelease = "305df04^"

// TestBuildForAnOlderRunner: a team builds for the runner the fleet runs
// today, an older release, with --for (or --runner): the .so is selected
// by that runner, and this one either selects it too or refuses it naming
// why, the fallback's normal case.
func TestBuildForAnOlderRunner(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a runner of an older release")
	}
	root := fixtures.Root()
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--verify", "--quiet", olderRelease+"^{commit}").CombinedOutput(); err != nil {
		t.Skipf("no commit %s in this checkout (%v: %s): the older release cannot be built", olderRelease, err, out)
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, olderRelease, src)
	out, err := archive.CombinedOutput()
	require.NoError(t, err, "%s", out)
	old := filepath.Join(t.TempDir(), "runner-old")
	build := exec.Command("go", append(append([]string{"build"}, fixtures.BuildFlags...), "-o", old, "./cmd/runner")...)
	build.Dir, build.Env = src, append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err = build.CombinedOutput()
	require.NoError(t, err, "building the runner of %s: %s", olderRelease, out)

	mod := filepath.Join(t.TempDir(), "fleet")
	code, out2 := runRunner(t, runners.here, "plugins", "new", "fleet", mod)
	require.Equal(t, 0, code, out2)
	dist := t.TempDir()
	code, out2 = runRunner(t, runners.here, "plugins", "build", "--for", old, "--out", dist, mod)
	require.Equal(t, 0, code, out2)

	code, out2 = runRunner(t, old, "plugins", "check", "--plugins", dist)
	assert.Equal(t, 0, code, out2)
	assert.Contains(t, out2, "selected: fleet 0.1.0", "the older runner loads what was built for it")
	code, out2 = runRunner(t, runners.here, "plugins", "check", "--plugins", dist)
	if !strings.Contains(out2, "selected: fleet 0.1.0") {
		assert.Regexp(t, `fleet\s+0\.1\.0\s+.*rejected\s+check\s+.*differs`, out2, "this runner refuses it naming why")
	}
	t.Logf("this runner on a build for %s:\n%s", olderRelease, out2)
}

// TestRecipeCommitsNoSecret: the README's recipe run inside the generated
// repository, a key generated there by a careless hand included: git
// status shows the sources only, not the key and not dist/.
func TestRecipeCommitsNoSecret(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	mod := filepath.Join(t.TempDir(), "stamp")
	code, out := runRunner(t, runners.here, "plugins", "new", "stamp", mod)
	require.Equal(t, 0, code, out)
	git := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = mod
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git %v: %s", args, out)
		return string(out)
	}
	git("init", "-q")
	_, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.here, Out: filepath.Join(mod, "dist")})
	require.NoError(t, err)
	code, out = runRunner(t, runners.here, "keygen", filepath.Join(mod, "team.key"))
	require.Equal(t, 0, code, out)
	code, out = runRunner(t, runners.here, "plugins", "sign", "--key", filepath.Join(mod, "team.key"), filepath.Join(mod, "dist", "stamp_v0.1.0.so"))
	require.Equal(t, 0, code, out)
	status := git("status", "--porcelain", "--untracked-files=all")
	assert.NotContains(t, status, "dist/")
	assert.NotContains(t, status, "team.key\n", "the private key")
	assert.Contains(t, status, "plugin.go")
	assert.Contains(t, status, ".gitignore")
}

// TestBuildBrokenModule: a module that does not compile is ErrGo with the
// compiler's message, and nothing is written: an output folder that was
// there stays (empty), one the build made is removed again.
func TestBuildBrokenModule(t *testing.T) {
	mod := writeModule(t, "broken", "module example.com/broken\n\ngo 1.26\n", map[string]string{"oops.go": "package main\n\nvar x int = \"no\"\n"})
	dist := t.TempDir()
	_, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.here, Out: dist})
	require.ErrorIs(t, err, pluginbuild.ErrGo)
	assert.Contains(t, err.Error(), "oops.go")
	entries, _ := os.ReadDir(dist)
	assert.Empty(t, entries)

	made := filepath.Join(t.TempDir(), "dist")
	_, err = pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.here, Out: made})
	require.ErrorIs(t, err, pluginbuild.ErrGo)
	assert.NoDirExists(t, made, "a failed build leaves no empty output folder")
}

// TestBuildNotAcceptableHere: a module whose IsAcceptable() is false on
// the build host (a release for hosts with a GPU) builds, its tests from
// new included, and is written with a note; --require-acceptable refuses
// it, and nothing is written.
func TestBuildNotAcceptableHere(t *testing.T) {
	mod := writeModule(t, "picky", "module example.com/picky\n\ngo 1.26\n", nil)
	src, err := os.ReadFile(filepath.Join(mod, "plugin.go"))
	require.NoError(t, err)
	src = []byte(strings.Replace(string(src), "func (transformer) IsAcceptable() bool { return true }", "func (transformer) IsAcceptable() bool { return false }", 1))
	require.NoError(t, os.WriteFile(filepath.Join(mod, "plugin.go"), src, 0o644))
	dist := t.TempDir()
	res, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.here, Out: dist, Test: true})
	require.NoError(t, err)
	assert.FileExists(t, res.File)
	require.Len(t, res.Notes, 1)
	assert.Contains(t, res.Notes[0], "IsAcceptable() returned false")

	dist = t.TempDir()
	_, err = pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.here, Out: dist, RequireAcceptable: true})
	require.ErrorIs(t, err, pluginbuild.ErrRejected)
	assert.Contains(t, err.Error(), "IsAcceptable")
	entries, _ := os.ReadDir(dist)
	assert.Empty(t, entries)
}

func TestTarget(t *testing.T) {
	base := func(mut func(*debug.BuildInfo)) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/soplug/soplug", Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "-trimpath", Value: "true"}, {Key: "CGO_ENABLED", Value: "1"}, {Key: "GOAMD64", Value: "v1"}}}
		if mut != nil {
			mut(bi)
		}
		return bi
	}
	set := func(k, v string) func(*debug.BuildInfo) {
		return func(bi *debug.BuildInfo) {
			for i := range bi.Settings {
				if bi.Settings[i].Key == k {
					bi.Settings[i].Value = v
					return
				}
			}
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: k, Value: v})
		}
	}
	for _, tc := range []struct {
		name    string
		bi      *debug.BuildInfo
		err     string
		flags   []string
		version string
	}{
		{name: "checkout", bi: base(nil)},
		{name: "race and tags", bi: base(func(bi *debug.BuildInfo) { set("-race", "true")(bi); set("-tags", "netgo")(bi) }), flags: []string{"-race"}},
		{name: "untrimmed", bi: base(set("-trimpath", "false")), err: "without -trimpath"},
		{name: "no cgo", bi: base(set("CGO_ENABLED", "0")), err: "CGO_ENABLED=0"},
		{name: "devel toolchain", bi: base(func(bi *debug.BuildInfo) { bi.GoVersion = "devel go1.27-abc" }), err: "not a Go release"},
		{name: "plugin", bi: base(set("-buildmode", "plugin")), err: "a plugin build"},
		{name: "installed at a version", bi: base(func(bi *debug.BuildInfo) { bi.Main.Version, bi.Main.Sum = "v1.2.0", "h1:x" }), version: "v1.2.0"},
		{name: "a dependency", bi: base(func(bi *debug.BuildInfo) {
			bi.Main = debug.Module{Path: "example.com/ourrunner"}
			bi.Deps = []*debug.Module{{Path: "github.com/soplug/soplug", Version: "v1.3.0"}}
		}), version: "v1.3.0"},
		{name: "no soplug", bi: base(func(bi *debug.BuildInfo) { bi.Main = debug.Module{Path: "example.com/other"} }), err: "does not link github.com/soplug/soplug"},
		{name: "folder replacement", bi: base(func(bi *debug.BuildInfo) {
			bi.Deps = []*debug.Module{{Path: "example.com/x", Version: "v1.0.0", Replace: &debug.Module{Path: "../x"}}}
		}), err: "replaced by the folder ../x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg, err := pluginbuild.TargetOf("runner", tc.bi)
			if tc.err != "" {
				require.ErrorIs(t, err, pluginbuild.ErrRunner)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "go1.26.8", tg.Toolchain)
			assert.Equal(t, tc.flags, tg.Flags)
			assert.Equal(t, tc.version, tg.ContractVersion)
			assert.Contains(t, tg.Env, "GOAMD64=v1")
		})
	}
}

func TestNewRefusals(t *testing.T) {
	full := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(full, "x"), nil, 0o644))
	for _, tc := range []struct {
		name string
		o    pluginbuild.NewOptions
		want error
	}{
		{"not empty", pluginbuild.NewOptions{Name: "p", Dir: full}, pluginbuild.ErrExists},
		{"bad name", pluginbuild.NewOptions{Name: "p q", Dir: t.TempDir()}, pluginbuild.ErrModule},
		{"no name", pluginbuild.NewOptions{Dir: t.TempDir()}, pluginbuild.ErrModule},
		{"bad kind", pluginbuild.NewOptions{Name: "p", Dir: t.TempDir(), Kind: "filter"}, pluginbuild.ErrModule},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pluginbuild.New(tc.o)
			require.ErrorIs(t, err, tc.want)
		})
	}
	entries, _ := os.ReadDir(full)
	assert.Len(t, entries, 1, "a refused New writes nothing")
}

// TestBuildFetchesRunnersToolchain: with another Go release as the local go
// command, Build gets the runner's release through the module proxy (as
// GOTOOLCHAIN does) and the result loads.
func TestBuildFetchesRunnersToolchain(t *testing.T) {
	const other = "go1.25.5" // the release build_plugins.sh fetches for the othergo fixture
	cmd := exec.Command("go", "env", "GOROOT")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+other)
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("the %s toolchain cannot be had here (no module proxy?): %v", other, err)
	}
	otherGo := filepath.Join(strings.TrimSpace(string(out)), "bin", "go")
	v, err := exec.Command(otherGo, "env", "GOVERSION").Output()
	require.NoError(t, err)
	require.Equal(t, other, strings.TrimSpace(string(v)))

	mod := writeModule(t, "released", "module example.com/released\n\ngo 1.25\n", nil)
	dist := t.TempDir()
	var log strings.Builder
	res, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.elsewhere, Out: dist, Go: otherGo, Log: &log})
	require.NoError(t, err, log.String())
	assert.Equal(t, runtime.Version(), res.Toolchain, "the runner's release, not the local go command's")
	selects(t, dist, "released")
}

// TestBuildFromAnAwkwardFolder: a module in a folder with spaces, with a
// go.work of its own that names a missing folder, and GOFLAGS and GOWORK in
// the environment that would break a plain go build, still builds: the
// workspace and the settings are the build's own.
func TestBuildFromAnAwkwardFolder(t *testing.T) {
	mod := filepath.Join(t.TempDir(), "team folder", "odd mod")
	_, err := pluginbuild.New(pluginbuild.NewOptions{Name: "odd", Dir: mod, Module: "example.com/odd"})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(mod, "go.work"), []byte("go 1.26\n\nuse ./missing\n"), 0o644))
	t.Setenv("GOFLAGS", "-mod=vendor")
	t.Setenv("GOWORK", filepath.Join(mod, "go.work"))
	t.Setenv("CGO_ENABLED", "0")
	dist := filepath.Join(t.TempDir(), "out dir")
	res, err := pluginbuild.Build(context.Background(), pluginbuild.Options{Module: mod, Runner: runners.here, Out: dist})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dist, "odd_v0.1.0.so"), res.File)
	selects(t, dist, "odd")
}
