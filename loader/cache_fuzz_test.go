package loader_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/soplug/soplug/loader"
)

// FuzzOpenCache: any bytes in the cache file open without a panic, and a
// selection with that cache comes to the verdicts a selection without one
// does (a file whose checksum does not match is not trusted).
func FuzzOpenCache(f *testing.F) {
	f.Add([]byte(`{"format":"soplug-verdicts-1","runner":"r","sum":"x","entries":{"p_v1.0.0.so":{"id":"1","hash":"2","ok":true}}}`))
	f.Add([]byte(`{"format":"soplug-verdicts-1","runner":"r","entries":null}`))
	f.Add([]byte(`not json`))
	dir := f.TempDir()
	install(f, dir, "noaccessor", "p_v1.0.0.so")
	want, _ := loader.New(loader.Config{Dir: dir}).Check(context.Background())
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "verdicts.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cache := loader.OpenCache(path, "r", nil)
		got, _ := loader.New(loader.Config{Dir: dir, Cache: cache}).Check(context.Background())
		if got.Candidates[0].Verdict != want.Candidates[0].Verdict || got.Candidates[0].Reason != want.Candidates[0].Reason {
			t.Fatalf("with the cache %q: %s %q, without: %s %q", data, got.Candidates[0].Verdict, got.Candidates[0].Reason,
				want.Candidates[0].Verdict, want.Candidates[0].Reason)
		}
	})
}
