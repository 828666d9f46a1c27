package quarantine_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/soplug/soplug/internal/quarantine"
)

// FuzzStateFile: whatever the state file holds, the store never panics;
// it either works or says which file is wrong.
func FuzzStateFile(f *testing.F) {
	f.Add([]byte(`{"versions":{}}`))
	f.Add([]byte(`{"run":{"pid":1,"loaded":["p@1.0.0","q@2"]},"versions":{"p@1.0.0":{"name":"p","version":"1.0.0","file":"1:2:3:4","crashes":1}}}`))
	f.Add([]byte(`{"run":{"loaded":["missing"]},"versions":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "quarantine.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		plugin := filepath.Join(t.TempDir(), "p_v1.0.0.so")
		if err := os.WriteFile(plugin, []byte("p"), 0o644); err != nil {
			t.Fatal(err)
		}
		s := &quarantine.Store{Dir: dir}
		if _, err := s.Begin(); err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v does not name %s", err, path)
			}
			return
		}
		if err := s.Admit("p", "1.0.0", plugin); err != nil && !strings.Contains(err.Error(), "quarantined") {
			t.Fatal(err)
		}
		if err := s.Loading("p", "1.0.0", plugin, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.Clean(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Records(); err != nil {
			t.Fatal(err)
		}
	})
}
