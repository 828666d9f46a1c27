package deploy_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/deploy"
	"github.com/soplug/soplug/internal/fixtures"
	"github.com/soplug/soplug/internal/trust"
	"github.com/soplug/soplug/loader"
	"github.com/soplug/soplug/loader/probe"
)

// TestMain lets the test binary act as the loader's probe child.
func TestMain(m *testing.M) {
	if code, ok := probe.Dispatch(os.Args); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func fixture(t *testing.T, name string) string {
	t.Helper()
	return fixtures.Path(t, name)
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dst, data, 0o644))
}

// snapshot describes a folder: every entry with its size, mode and time.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		fi, err := e.Info()
		require.NoError(t, err)
		out = append(out, fmt.Sprintf("%s %d %v %d", e.Name(), fi.Size(), fi.Mode(), fi.ModTime().UnixNano()))
	}
	sort.Strings(out)
	return out
}

// folder returns a plugins folder holding wasmtag 1.1.0, a good version.
func folder(t *testing.T) string {
	dir := t.TempDir()
	copyFile(t, filepath.Join(fixtures.Root(), "plugins", "wasmtag_v1.1.0.so"), filepath.Join(dir, "wasmtag_v1.1.0.so"))
	return dir
}

func TestInstall(t *testing.T) {
	t.Parallel()
	dir := folder(t)
	res, err := deploy.Install{Loader: loader.Config{Dir: dir}, Name: "wasmtag"}.Run(context.Background(), fixture(t, "good-1.2.0"))
	require.NoError(t, err)
	assert.Equal(t, deploy.Installed{File: "wasmtag_v1.2.0.so", Name: "wasmtag", Version: "1.2.0", Kind: "transformer"},
		deploy.Installed{File: res.File, Name: res.Name, Version: res.Version, Kind: res.Kind})
	assert.True(t, res.Diagnosis.Acceptable)

	want, err := os.ReadFile(fixture(t, "good-1.2.0"))
	require.NoError(t, err)
	got, err := os.ReadFile(filepath.Join(dir, "wasmtag_v1.2.0.so"))
	require.NoError(t, err)
	assert.Equal(t, want, got)
	fi, err := os.Stat(filepath.Join(dir, "wasmtag_v1.2.0.so"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "no temporary file is left behind")
}

// TestInstallRefusals: every refusal names its reason and leaves the folder
// exactly as it was.
func TestInstallRefusals(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		install deploy.Install
		src     func(t *testing.T) string
		errs    []error
		msg     string
	}{
		{"existing version", deploy.Install{}, func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "wasmtag_v1.1.0.so")
			copyFile(t, fixture(t, "good-1.1.0"), p)
			return p
		}, []error{deploy.ErrExists}, "wasmtag 1.1.0 is [wasmtag_v1.1.0.so]"},
		{"not acceptable here, required", deploy.Install{Name: "wasmtag", RequireAcceptable: true}, func(t *testing.T) string { return fixture(t, "notacceptable") },
			[]error{deploy.ErrRejected, loader.ErrNotAcceptable}, "IsAcceptable() returned false"},
		{"init panics", deploy.Install{Name: "wasmtag"}, func(t *testing.T) string { return fixture(t, "initpanic") },
			[]error{deploy.ErrRejected, loader.ErrPanic}, "initpanic: cannot start"},
		{"truncated", deploy.Install{}, func(t *testing.T) string {
			data, err := os.ReadFile(fixture(t, "good-1.2.0"))
			require.NoError(t, err)
			p := filepath.Join(t.TempDir(), "wasmtag_v1.2.0.so")
			require.NoError(t, os.WriteFile(p, data[:len(data)/3], 0o644))
			return p
		}, []error{deploy.ErrRejected, loader.ErrTruncated}, "truncated ELF file"},
		{"another dependency version", deploy.Install{Name: "wasmtag"}, func(t *testing.T) string { return fixture(t, "otherdep") },
			[]error{deploy.ErrRejected, loader.ErrBuildMismatch}, "package github.com/hashicorp/go-version differs"},
		{"Version() disagrees", deploy.Install{Name: "wasmtag", Version: "1.3.0"}, func(t *testing.T) string { return fixture(t, "good-1.2.0") },
			[]error{deploy.ErrRejected, loader.ErrVersionMismatch}, `Version() returned "1.2.0", the file name says 1.3.0`},
		{"file name disagrees", deploy.Install{Version: "1.3.0"}, func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "wasmtag_v1.2.0.so")
			copyFile(t, fixture(t, "good-1.2.0"), p)
			return p
		}, []error{deploy.ErrUsage}, "named for version 1.2.0, not 1.3.0"},
		{"no name", deploy.Install{}, func(t *testing.T) string { return fixture(t, "good-1.2.0") },
			[]error{deploy.ErrUsage}, "give --name"},
		{"the build of another plugin", deploy.Install{Name: "other"}, func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "build.so")
			copyFile(t, filepath.Join(fixtures.Root(), "plugins", "wasmtag_v1.1.0.so"), p)
			return p
		}, []error{deploy.ErrRejected, loader.ErrSameBuild}, "it is the build of wasmtag_v1.1.0.so (plugin wasmtag"},
		{"missing file", deploy.Install{Name: "wasmtag"}, func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope.so") },
			[]error{os.ErrNotExist}, "nope.so"},
		{"a garbage signature, no trusted key", deploy.Install{}, func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "wasmtag_v1.2.0.so")
			copyFile(t, fixture(t, "good-1.2.0"), p)
			require.NoError(t, os.WriteFile(p+".sig", []byte("not a signature\n"), 0o644))
			return p
		}, []error{deploy.ErrRejected, trust.ErrSignature}, "wasmtag_v1.2.0.so.sig is not the base64 of a 64-byte ed25519 signature"},
		{"a signature cut short", deploy.Install{}, func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "wasmtag_v1.2.0.so")
			copyFile(t, fixture(t, "good-1.2.0"), p)
			require.NoError(t, os.WriteFile(p+".sig", []byte(base64.StdEncoding.EncodeToString(make([]byte, 63))), 0o644))
			return p
		}, []error{deploy.ErrRejected, trust.ErrSignature}, "64-byte ed25519 signature"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := folder(t)
			before := snapshot(t, dir)
			in := tc.install
			in.Loader = loader.Config{Dir: dir}
			_, err := in.Run(context.Background(), tc.src(t))
			require.Error(t, err)
			for _, e := range tc.errs {
				assert.ErrorIs(t, err, e)
			}
			assert.Contains(t, err.Error(), tc.msg)
			assert.Equal(t, before, snapshot(t, dir), "the folder is as it was")
		})
	}
}

func TestInstallForce(t *testing.T) {
	t.Parallel()
	dir := folder(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "wasmtag_v1.2.0.so"), []byte("a bad build"), 0o644))
	in := deploy.Install{Loader: loader.Config{Dir: dir}, Name: "wasmtag"}
	_, err := in.Run(context.Background(), fixture(t, "good-1.2.0"))
	require.ErrorIs(t, err, deploy.ErrExists)
	in.Force = true
	res, err := in.Run(context.Background(), fixture(t, "good-1.2.0"))
	require.NoError(t, err)
	assert.True(t, res.Replaced)
	fi, err := os.Stat(filepath.Join(dir, "wasmtag_v1.2.0.so"))
	require.NoError(t, err)
	assert.Greater(t, fi.Size(), int64(1000))
}

// TestInstallWhileWritten installs a file that another process is still
// writing: refused, and the folder is unchanged.
func TestInstallWhileWritten(t *testing.T) {
	t.Parallel()
	dir := folder(t)
	before := snapshot(t, dir)
	data, err := os.ReadFile(fixture(t, "good-1.2.0"))
	require.NoError(t, err)
	src := filepath.Join(t.TempDir(), "wasmtag_v1.2.0.so")
	f, err := os.Create(src)
	require.NoError(t, err)
	_, err = f.Write(data[:4096])
	require.NoError(t, err)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer f.Close()
		for off := 4096; off < len(data); off += 4096 {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if _, err := f.Write(data[off:min(off+4096, len(data))]); err != nil {
				return
			}
		}
	}()
	_, err = deploy.Install{Loader: loader.Config{Dir: dir}}.Run(context.Background(), src)
	close(stop)
	<-done
	require.Error(t, err)
	assert.True(t, errors.Is(err, deploy.ErrChanged) || errors.Is(err, loader.ErrTruncated), "%v", err)
	assert.Equal(t, before, snapshot(t, dir))
}

func TestRemove(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := folder(t)
	copyFile(t, fixture(t, "good-1.2.0"), filepath.Join(dir, "wasmtag_v1.2.0.so"))
	copyFile(t, fixture(t, "notacceptable"), filepath.Join(dir, "wasmtag_v2.0.0.so"))
	rm := deploy.Remove{Loader: loader.Config{Dir: dir}}

	_, err := rm.Run(ctx, "wasmtag", "3.0.0")
	assert.ErrorIs(t, err, deploy.ErrNotFound)

	res, err := rm.Run(ctx, "wasmtag", "2.0.0") // broken, not the active one
	require.NoError(t, err)
	assert.Equal(t, deploy.Removed{Files: []string{"wasmtag_v2.0.0.so"}, Active: "1.2.0", Next: "1.2.0", NextFile: "wasmtag_v1.2.0.so"}, res)

	res, err = rm.Run(ctx, "wasmtag", "v1.2.0") // the rollback
	require.NoError(t, err)
	assert.Equal(t, deploy.Removed{Files: []string{"wasmtag_v1.2.0.so"}, Active: "1.2.0", Next: "1.1.0", NextFile: "wasmtag_v1.1.0.so"}, res)

	before := snapshot(t, dir)
	_, err = rm.Run(ctx, "wasmtag", "1.1.0")
	require.ErrorIs(t, err, deploy.ErrLastVersion)
	assert.Contains(t, err.Error(), "wasmtag has no acceptable version")
	assert.Equal(t, before, snapshot(t, dir), "the folder is as it was")

	rm.Force = true
	res, err = rm.Run(ctx, "wasmtag", "1.1.0")
	require.NoError(t, err)
	assert.Equal(t, "", res.Next)
	_, err = os.Stat(filepath.Join(dir, "wasmtag_v1.1.0.so"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// TestInstallNotAcceptableHere: a version whose IsAcceptable() is false on
// this host, loadable otherwise (a release for other hosts), is installed
// with a note saying so; the daemon here passes over it and serves the
// older one. A version that fails anything else is refused as ever.
func TestInstallNotAcceptableHere(t *testing.T) {
	t.Parallel()
	dir := folder(t)
	res, err := deploy.Install{Loader: loader.Config{Dir: dir}, Name: "wasmtag"}.Run(context.Background(), fixture(t, "notacceptable"))
	require.NoError(t, err)
	assert.False(t, res.Diagnosis.Acceptable)
	assert.True(t, res.Diagnosis.Loadable())
	require.Len(t, res.Notes, 1)
	assert.Contains(t, res.Notes[0], "IsAcceptable() returned false")
	assert.Contains(t, res.Notes[0], "installed all the same")
	assert.NotContains(t, res.Notes[0], "/.", "no temporary path")
	assert.FileExists(t, filepath.Join(dir, res.File))

	sel, err := loader.New(loader.Config{Dir: dir}).Check(context.Background())
	require.NoError(t, err)
	require.Len(t, sel.Selected(), 1)
	assert.Equal(t, "1.1.0", sel.Selected()[0].Version.String(), "the runner here passes over it")
}

// TestSignatureTravels: a well-formed signature is installed beside its
// plugin, with a note when no trusted key verified it; remove takes it
// out with the plugin, so none is left to warn at every start.
func TestSignatureTravels(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := folder(t)
	src := filepath.Join(t.TempDir(), "wasmtag_v1.2.0.so")
	copyFile(t, fixture(t, "good-1.2.0"), src)
	require.NoError(t, os.WriteFile(src+".sig", []byte(base64.StdEncoding.EncodeToString(make([]byte, 64))+"\n"), 0o644))
	res, err := deploy.Install{Loader: loader.Config{Dir: dir}}.Run(ctx, src)
	require.NoError(t, err)
	assert.Equal(t, []string{"wasmtag_v1.2.0.so.sig is a well-formed signature, installed but not verified: no trusted key was given (--trusted-key)"}, res.Notes)
	assert.FileExists(t, filepath.Join(dir, "wasmtag_v1.2.0.so.sig"))

	rm, err := deploy.Remove{Loader: loader.Config{Dir: dir}}.Run(ctx, "wasmtag", "1.2.0")
	require.NoError(t, err)
	assert.Equal(t, []string{"wasmtag_v1.2.0.so"}, rm.Files)
	assert.Equal(t, []string{"wasmtag_v1.2.0.so.sig"}, rm.Signatures)
	assert.NoFileExists(t, filepath.Join(dir, "wasmtag_v1.2.0.so.sig"))
	assert.NoFileExists(t, filepath.Join(dir, "wasmtag_v1.2.0.so"))
}

// TestInstallExecutable: an out-of-process plugin is installed under
// <name>_v<semver>, executable, named from its Version() when its file
// name says nothing.
func TestInstallExecutable(t *testing.T) {
	dir := folder(t)
	src := filepath.Join(t.TempDir(), "build-output")
	copyFile(t, fixture(t, "otherdep.exec"), src)
	out, err := deploy.Install{Loader: loader.Config{Dir: dir}, Name: "other"}.Run(context.Background(), src)
	require.NoError(t, err)
	assert.Equal(t, "other_v9.0.0", out.File)
	assert.Equal(t, "transformer", out.Kind)
	fi, err := os.Stat(filepath.Join(dir, "other_v9.0.0"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm())
	sel, err := loader.New(loader.Config{Dir: dir}).Check(context.Background())
	require.NoError(t, err)
	var selected []string
	for _, c := range sel.Selected() {
		selected = append(selected, c.File)
	}
	assert.Equal(t, []string{"other_v9.0.0", "wasmtag_v1.1.0.so"}, selected)
}
