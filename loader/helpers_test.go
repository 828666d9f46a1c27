package loader_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/fixtures"
	"github.com/soplug/soplug/loader/probe"
)

// TestMain lets the test binary be its own probe child: the loader's default
// probe command re-executes this executable with probe.Arg.
func TestMain(m *testing.M) {
	if code, ok := probe.Dispatch(os.Args); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// fixture returns the path of a built fixture plugin.
func fixture(t testing.TB, name string) string {
	t.Helper()
	return fixtures.Path(t, name)
}

// install copies the fixture named name into dir as file.
func install(t testing.TB, dir, name, file string) string {
	t.Helper()
	data, err := os.ReadFile(fixture(t, name))
	require.NoError(t, err)
	return write(t, dir, file, data)
}

func write(t testing.TB, dir, file string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, file)
	require.NoError(t, os.WriteFile(p, data, 0o755))
	return p
}

// truncated returns the first half of a good plugin: a copy interrupted
// half way.
func truncated(t testing.TB) []byte {
	data, err := os.ReadFile(fixture(t, "good-1.0.0"))
	require.NoError(t, err)
	return data[:len(data)/2]
}

// wrongArch returns a good plugin whose ELF header says AArch64.
func wrongArch(t testing.TB) []byte {
	data, err := os.ReadFile(fixture(t, "good-1.0.0"))
	require.NoError(t, err)
	binary.LittleEndian.PutUint16(data[18:20], 183) // e_machine = EM_AARCH64
	return data
}
