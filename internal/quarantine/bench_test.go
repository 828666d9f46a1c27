package quarantine_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/quarantine"
)

// BenchmarkRestart is what the store does on a restart's path onto two
// proven versions: the old run's Clean, then the new run's Begin and two
// Loadings, in a state directory on the machine's disk (the test's
// temporary folder; QUARANTINE_BENCH_DIR names another).
func BenchmarkRestart(b *testing.B) {
	dir := os.Getenv("QUARANTINE_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else {
		var err error
		dir, err = os.MkdirTemp(dir, "bench-")
		require.NoError(b, err)
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	state := filepath.Join(dir, "state")
	var files []string
	for _, f := range []string{"p_v1.0.0.so", "q_v1.0.0.so"} {
		p := filepath.Join(dir, f)
		require.NoError(b, os.WriteFile(p, []byte(f), 0o644))
		files = append(files, p)
	}
	s := &quarantine.Store{Dir: state}
	start := func() {
		if _, err := s.Begin(); err != nil {
			b.Fatal(err)
		}
		for i, f := range files {
			if err := s.Loading(string(rune('p'+i)), "1.0.0", f, ""); err != nil {
				b.Fatal(err)
			}
		}
	}
	start()
	require.NoError(b, s.Clean()) // proven
	start()
	for b.Loop() {
		if err := s.Clean(); err != nil {
			b.Fatal(err)
		}
		start()
	}
}
