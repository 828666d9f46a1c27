package atomicfile_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/atomicfile"
)

// TestWriteFor: in a folder another user controls, what was planted there
// is replaced, never written through, and the file gets the owner and
// mode asked for.
func TestWriteFor(t *testing.T) {
	tests := []struct {
		name  string
		plant func(t *testing.T, dir, path, victim string)
	}{
		{"nothing there", func(*testing.T, string, string, string) {}},
		{"a file there", func(t *testing.T, _, path, _ string) {
			require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
		}},
		{"a symlink at the path", func(t *testing.T, _, path, victim string) {
			require.NoError(t, os.Symlink(victim, path))
		}},
		{"a symlink at Write's temporary name", func(t *testing.T, _, path, victim string) {
			require.NoError(t, os.Symlink(victim, path+".tmp"))
		}},
		{"a dangling symlink at the path", func(t *testing.T, dir, path, _ string) {
			require.NoError(t, os.Symlink(filepath.Join(dir, "missing"), path))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, outside := t.TempDir(), t.TempDir()
			victim := filepath.Join(outside, "victim")
			require.NoError(t, os.WriteFile(victim, []byte("keep me"), 0o644))
			path := filepath.Join(dir, "stop.json")
			tc.plant(t, dir, path, victim)

			require.NoError(t, atomicfile.WriteFor(path, []byte("new"), 0o600, os.Getuid(), os.Getgid()))

			fi, err := os.Lstat(path)
			require.NoError(t, err)
			assert.True(t, fi.Mode().IsRegular(), "a regular file replaced what was there")
			assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, "new", string(data))
			data, err = os.ReadFile(victim)
			require.NoError(t, err)
			assert.Equal(t, "keep me", string(data), "nothing written through a symlink")
			left, err := filepath.Glob(filepath.Join(dir, ".stop.json.*.tmp"))
			require.NoError(t, err)
			assert.Empty(t, left, "no temporary file left")
		})
	}
}

// TestWriteForOwner: run as root, the file belongs to the uid and gid
// given, as a state directory's record must for the service's user.
func TestWriteForOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving a file to another user needs root")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	require.NoError(t, atomicfile.WriteFor(path, []byte("x"), 0o640, 64787, 64788))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	assert.Equal(t, uint32(64787), st.Uid)
	assert.Equal(t, uint32(64788), st.Gid)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
}

// TestWriteForErrors: a missing folder is an error naming it, and leaves
// nothing behind.
func TestWriteForErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "f")
	err := atomicfile.WriteFor(path, []byte("x"), 0o600, -1, -1)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Dir(path))
}

// TestReplace: Replace and Write give readers the same: the new content in
// a new file of the mode asked for, no temporary left; a failure leaves the
// old content and no temporary.
func TestReplace(t *testing.T) {
	for name, write := range map[string]func(string, []byte, os.FileMode) error{
		"Replace": atomicfile.Replace,
		"Write":   atomicfile.Write,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "verdicts.json")
			require.NoError(t, os.WriteFile(path, []byte("old"), 0o600))
			before, err := os.Stat(path)
			require.NoError(t, err)

			require.NoError(t, write(path, []byte("new"), 0o640))
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, "new", string(data))
			after, err := os.Stat(path)
			require.NoError(t, err)
			assert.False(t, os.SameFile(before, after), "a new file renamed over the old, not the old rewritten")
			assert.Equal(t, os.FileMode(0o640), after.Mode().Perm())
			left, err := filepath.Glob(filepath.Join(dir, "*.tmp"))
			require.NoError(t, err)
			assert.Empty(t, left)

			// A temporary that cannot be written: a folder in its place.
			require.NoError(t, os.Mkdir(path+".tmp", 0o700))
			assert.Error(t, write(path, []byte("newer"), 0o640))
			data, err = os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, "new", string(data), "the old content stays")
		})
	}
}
