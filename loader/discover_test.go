package loader_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/loader"
)

func TestParseFileName(t *testing.T) {
	t.Parallel()
	good := []struct{ file, name, version string }{
		{"wasmtag_v1.2.0.so", "wasmtag", "1.2.0"},
		{"wasmtag_1.2.0.so", "wasmtag", "1.2.0"},
		{"my_plugin_v1.0.0.so", "my_plugin", "1.0.0"},
		{"a-b.c_v2.0.0-rc.1.so", "a-b.c", "2.0.0-rc.1"},
		{"x_v1.0.0+build.5.so", "x", "1.0.0+build.5"},
		{"x_v1.2.so", "x", "1.2.0"},
		{"x_v3_v1.0.0.so", "x_v3", "1.0.0"},
	}
	for _, tc := range good {
		name, v, err := loader.ParseFileName(tc.file)
		if assert.NoError(t, err, tc.file) {
			assert.Equal(t, tc.name, name, tc.file)
			assert.Equal(t, tc.version, v.String(), tc.file)
		}
	}
	bad := []string{"", ".so", "x.so", "x_v1.0.0", "x_v1.0.0.so.tmp", "_v1.0.0.so", "x_vnext.so",
		"x_v1.0.0-.so", "-x_v1.0.0.so", "a b_v1.0.0.so", "x/y_v1.0.0.so", "x__v1.0.0.so"}
	for _, file := range bad {
		_, _, err := loader.ParseFileName(file)
		assert.ErrorIs(t, err, loader.ErrBadName, "%q", file)
	}
}

func TestIsTempName(t *testing.T) {
	t.Parallel()
	for file, want := range map[string]bool{
		"x_v1.0.0.so": false, ".x_v1.0.0.so": true, "x_v1.0.0.so.tmp": true, "x_v1.0.0.so.part": true,
		"x_v1.0.0.so~": true, ".gitignore": true, "x_v1.0.0.so.swp": true, "README.md": false,
	} {
		assert.Equal(t, want, loader.IsTempName(file), file)
	}
}

// TestDiscoverOrder checks semver order, prereleases below their release,
// names grouped, and unparsed names last.
func TestDiscoverOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	files := []string{
		"b_v1.0.0.so", "a_v1.10.0.so", "a_v1.2.0.so", "a_v2.0.0-rc.1.so", "a_v2.0.0.so", "a_v2.0.0-beta.so",
		"a_v0.9.so", "a_v1.0.0-alpha.so", "a_v10.0.0.so", "zz-notes.txt", "a_v2.0.0-rc.2.so",
	}
	for _, f := range files {
		write(t, dir, f, []byte("x"))
	}
	cands, err := loader.Discover(dir)
	require.NoError(t, err)
	var got []string
	for _, c := range cands {
		got = append(got, c.File)
	}
	assert.Equal(t, []string{
		"a_v10.0.0.so", "a_v2.0.0.so", "a_v2.0.0-rc.2.so", "a_v2.0.0-rc.1.so", "a_v2.0.0-beta.so",
		"a_v1.10.0.so", "a_v1.2.0.so", "a_v1.0.0-alpha.so", "a_v0.9.so", "b_v1.0.0.so", "zz-notes.txt",
	}, got)
	for _, c := range cands[:len(cands)-1] {
		assert.Equal(t, loader.NotTried, c.Verdict, c.File)
	}
	assert.ErrorIs(t, cands[len(cands)-1].Err, loader.ErrBadName)
}

func TestDiscoverSymlinkInsideFolder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, dir, "p_v1.0.0.so", []byte("x"))
	require.NoError(t, os.Symlink("p_v1.0.0.so", filepath.Join(dir, "p_v1.0.1.so")))
	cands, err := loader.Discover(dir)
	require.NoError(t, err)
	require.Len(t, cands, 2)
	for _, c := range cands {
		assert.Equal(t, loader.NotTried, c.Verdict, "%s: %s", c.File, c.Reason)
	}
}

func TestDiscoverUnreadableFolder(t *testing.T) {
	t.Parallel()
	_, err := loader.Discover(filepath.Join(t.TempDir(), "missing"))
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "missing")
}
