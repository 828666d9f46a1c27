package loader_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/fixtures"
	"github.com/soplug/soplug/loader"
)

// TestBadInputMatrix puts one bad entry beside a good older version and
// checks that the bad one is rejected for the right reason, at the right
// stage, that the good one is selected, and that this process, which plays
// the daemon, is still here to check it.
func TestBadInputMatrix(t *testing.T) {
	t.Parallel()
	fx := func(name string) func(*testing.T, string) {
		return func(t *testing.T, dir string) { install(t, dir, name, "p_v2.0.0.so") }
	}
	bytesOf := func(data func(testing.TB) []byte) func(*testing.T, string) {
		return func(t *testing.T, dir string) { write(t, dir, "p_v2.0.0.so", data(t)) }
	}
	cases := []struct {
		name   string
		setup  func(t *testing.T, dir string)
		files  []string // the rejected entries; default p_v2.0.0.so
		stage  loader.Stage
		err    error
		reason string
	}{
		{"truncated .so", bytesOf(truncated), nil, loader.StageCheck, loader.ErrTruncated, "ends at byte"},
		{"empty file", bytesOf(func(testing.TB) []byte { return nil }), nil, loader.StageCheck, loader.ErrEmpty, "empty file"},
		{"not ELF", bytesOf(func(testing.TB) []byte { return []byte("#!/bin/sh\necho not a plugin\n") }), nil, loader.StageCheck, loader.ErrNotELF, "ELF magic"},
		{"wrong-arch ELF", bytesOf(wrongArch), nil, loader.StageCheck, loader.ErrWrongArch, "EM_AARCH64"},
		{"executable", fx("executable"), nil, loader.StageCheck, loader.ErrNotPlugin, "executable"},
		{"C shared library", fx("clib"), nil, loader.StageCheck, loader.ErrNotPlugin, "no Go build info"},
		{"different contract version", fx("othercontract"), nil, loader.StageCheck, loader.ErrBuildMismatch,
			"package github.com/soplug/soplug/contract differs"},
		{"different dependency version", fx("otherdep"), nil, loader.StageCheck, loader.ErrBuildMismatch,
			"package github.com/hashicorp/go-version differs (github.com/hashicorp/go-version: plugin => github.com/hashicorp/go-version v1.7.0, runner (not recorded))"},
		{"different Go release", func(t *testing.T, dir string) {
			if !fixtures.Built("othergo") {
				t.Skip("build_plugins.sh could not fetch the other Go toolchain")
			}
			install(t, dir, "othergo", "p_v2.0.0.so")
		}, nil, loader.StageCheck, loader.ErrBuildMismatch, "built with another Go toolchain or other flags (go: plugin go1.25.5, runner go1.26.8)"},
		{"missing accessor", fx("noaccessor"), nil, loader.StageProbe, loader.ErrNoAccessor, "exports neither func Transformer()"},
		{"accessor of the wrong type", fx("wrongtype"), nil, loader.StageProbe, loader.ErrAccessorType, "has type func() string"},
		{"exported interface variable", fx("variable"), nil, loader.StageProbe, loader.ErrAccessorType, "is an exported variable"},
		{"accessors of two kinds", fx("bothkinds"), nil, loader.StageProbe, loader.ErrAccessorType, "exports both"},
		{"accessor returns nil", fx("nilaccessor"), nil, loader.StageProbe, loader.ErrNilPlugin, "Transformer() returned nil"},
		{"Version differs from file name", fx("badversion"), nil, loader.StageProbe, loader.ErrVersionMismatch, `"0.0.1-not-the-file", the file name says 2.0.0`},
		{"IsAcceptable false", fx("notacceptable"), nil, loader.StageProbe, loader.ErrNotAcceptable, "IsAcceptable() returned false"},
		{"IsAcceptable panics", fx("acceptpanic"), nil, loader.StageProbe, loader.ErrPanic, "acceptpanic: no config"},
		{"IsAcceptable hangs", fx("accepthang"), nil, loader.StageProbe, loader.ErrTimeout, "while calling IsAcceptable()"},
		{"init panics", fx("initpanic"), nil, loader.StageProbe, loader.ErrPanic, "initpanic: cannot start"},
		{"init calls os.Exit", fx("initexit"), nil, loader.StageProbe, loader.ErrCrash, "exited with status 3 while opening the plugin"},
		{"init segfaults", fx("initsegv"), nil, loader.StageProbe, loader.ErrCrash, "SIGSEGV"},
		{"init sleeps", fx("initsleep"), nil, loader.StageProbe, loader.ErrTimeout, "while opening the plugin"},
		{"init stops its process", fx("initstop"), nil, loader.StageProbe, loader.ErrTimeout, "no verdict within"},
		{"duplicate versions", func(t *testing.T, dir string) {
			install(t, dir, "good-2.0.0", "p_v2.0.0.so")
			install(t, dir, "good-2.0.0", "p_2.0.0.so")
			install(t, dir, "good-2.0.0", "p_v2.0.0+build.7.so")
		}, []string{"p_v2.0.0.so", "p_2.0.0.so", "p_v2.0.0+build.7.so"}, loader.StageDiscover, loader.ErrDuplicateVersion, "is also named by"},
		{"unparseable names", func(t *testing.T, dir string) {
			for _, f := range []string{"p_vlatest.so", "p.so", "_v2.0.0.so", "p v2_v2.0.0.so", "README.md"} {
				install(t, dir, "good-2.0.0", f)
			}
		}, []string{"p_vlatest.so", "p.so", "_v2.0.0.so", "p v2_v2.0.0.so", "README.md"}, loader.StageDiscover, loader.ErrBadName, ""},
		{"temp and partial files", func(t *testing.T, dir string) {
			for _, f := range []string{"p_v2.0.0.so.tmp", "p_v2.0.0.so.part", "p_v2.0.0.so~", ".p_v2.0.0.so"} {
				write(t, dir, f, truncated(t))
			}
		}, []string{"p_v2.0.0.so.tmp", "p_v2.0.0.so.part", "p_v2.0.0.so~", ".p_v2.0.0.so"}, loader.StageDiscover, loader.ErrTempFile, "temporary, partial or hidden"},
		{"directory named like a plugin", func(t *testing.T, dir string) {
			require.NoError(t, os.Mkdir(filepath.Join(dir, "p_v2.0.0.so"), 0o755))
		}, nil, loader.StageDiscover, loader.ErrNotRegular, "a directory"},
		{"symlink out of the folder", func(t *testing.T, dir string) {
			outside := install(t, t.TempDir(), "good-2.0.0", "p_v2.0.0.so")
			require.NoError(t, os.Symlink(outside, filepath.Join(dir, "p_v2.0.0.so")))
		}, nil, loader.StageDiscover, loader.ErrSymlinkEscape, "it leads to"},
		{"dangling symlink", func(t *testing.T, dir string) {
			require.NoError(t, os.Symlink(filepath.Join(dir, "gone.so"), filepath.Join(dir, "p_v2.0.0.so")))
		}, nil, loader.StageDiscover, loader.ErrBrokenSymlink, "gone.so does not exist"},
		{"symlink loop", func(t *testing.T, dir string) {
			require.NoError(t, os.Symlink("p_v2.0.0.so", filepath.Join(dir, "p_v2.0.0.so")))
		}, nil, loader.StageDiscover, loader.ErrBrokenSymlink, "loader: symlink leads nowhere: it goes round a loop of symbolic links (ELOOP)"},
		{"named pipe", func(t *testing.T, dir string) {
			require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "p_v2.0.0.so"), 0o644))
		}, nil, loader.StageDiscover, loader.ErrNotRegular, "loader: not a regular file: a named pipe (FIFO)"},
		{"symlink to a pipe", func(t *testing.T, dir string) {
			require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
			require.NoError(t, os.Symlink("fifo", filepath.Join(dir, "p_v2.0.0.so")))
		}, nil, loader.StageDiscover, loader.ErrNotRegular, "loader: not a regular file: a named pipe (FIFO)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			install(t, dir, "good-1.0.0", "p_v1.0.0.so")
			tc.setup(t, dir)
			files := tc.files
			if files == nil {
				files = []string{"p_v2.0.0.so"}
			}

			l := loader.New(loader.Config{Dir: dir, Prober: loader.Prober{Timeout: 5 * time.Second}})
			sel, err := l.Check(context.Background())
			for _, c := range sel.Candidates {
				if c.Err != nil && err != nil {
					t.Logf("%s: %v", c.File, c.Err)
				}
			}
			require.NoError(t, err, "the good older version must still be selected")

			byFile := map[string]loader.Candidate{}
			for _, c := range sel.Candidates {
				byFile[c.File] = c
			}
			for _, f := range files {
				c, ok := byFile[f]
				require.True(t, ok, "%s is not in the candidate table", f)
				t.Logf("%s: %s: %s", f, c.Stage, c.Reason)
				assert.Equal(t, loader.Rejected, c.Verdict, f)
				assert.Equal(t, tc.stage, c.Stage, "%s: %s", f, c.Reason)
				assert.ErrorIs(t, c.Err, tc.err, f)
				assert.Contains(t, c.Reason, tc.reason, f)
				var rerr *loader.RejectError
				if assert.True(t, errors.As(c.Err, &rerr)) {
					assert.Equal(t, filepath.Join(dir, f), rerr.Path, "the error names the file")
				}
			}
			good := byFile["p_v1.0.0.so"]
			assert.Equal(t, loader.Selected, good.Verdict, good.Reason)
			assert.Equal(t, "transformer", string(good.Kind))
		})
	}
}
