package buildcheck_test

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/fixtures"
	"github.com/soplug/soplug/loader/buildcheck"
)

// referenceHashes reads the package hashes the plain way, decoding every
// symbol with debug/elf: what Read did before it scanned the table in place.
func referenceHashes(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := elf.Open(path)
	require.NoError(t, err)
	defer f.Close()
	out := map[string]string{}
	for _, read := range []func() ([]elf.Symbol, error){f.DynamicSymbols, f.Symbols} {
		syms, err := read()
		if err != nil {
			continue
		}
		for _, s := range syms {
			pkg, ok := strings.CutPrefix(s.Name, "go:link.pkghashbytes.")
			if !ok || s.Size == 0 || s.Size > 64 {
				continue
			}
			sec := f.Sections[s.Section]
			buf := make([]byte, s.Size)
			_, err := sec.ReadAt(buf, int64(s.Value-sec.Addr))
			require.NoError(t, err)
			out[pkg] = fmt.Sprintf("%x", buf)
		}
		if len(out) > 0 {
			break
		}
	}
	return out
}

// TestReadMatchesDebugELF: the in-place scan finds exactly the hashes that
// decoding every symbol finds, in the runner and in every fixture.
func TestReadMatchesDebugELF(t *testing.T) {
	paths := []string{runnerPath}
	entries, err := os.ReadDir(fixtures.Dir())
	require.NoError(t, err)
	for _, e := range entries {
		if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") && (strings.HasSuffix(e.Name(), ".so") || strings.HasSuffix(e.Name(), ".exec")) {
			paths = append(paths, filepath.Join(fixtures.Dir(), e.Name()))
		}
	}
	require.Greater(t, len(paths), 10)
	withHashes := 0
	for _, p := range paths {
		b, err := buildcheck.Read(p)
		if err != nil { // the C library has no Go build info
			assert.Contains(t, p, "clib.so")
			continue
		}
		assert.Equal(t, referenceHashes(t, p), b.PkgHashes, "%s", p)
		if len(b.PkgHashes) > 0 {
			withHashes++
		}
	}
	assert.Greater(t, withHashes, 10, "the fixtures and the runner hold package hashes")
}
