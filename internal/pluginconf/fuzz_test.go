package pluginconf_test

import (
	"errors"
	"testing"

	"github.com/soplug/soplug/internal/pluginconf"
)

// FuzzParse: any input parses or fails with one of the package's errors,
// never a panic; what parses validates without panicking either.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("chain = [\"a\", \"a\"]\n[plugins.a.config]\nk = 1\n"))
	f.Add([]byte("[plugins.a]\nconfig = { x = { y = \"z\" } }\noverridable = [\"bad key\"]\n"))
	f.Add([]byte("[[plugins]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := pluginconf.Parse("fuzz.toml", data)
		if err != nil {
			if !errors.Is(err, pluginconf.ErrSyntax) && !errors.Is(err, pluginconf.ErrInvalid) {
				t.Fatalf("an error that wraps neither sentinel: %v", err)
			}
			return
		}
		_ = file.Validate([]string{"a", "wasmtag"})
		for name := range file.Plugins {
			_ = file.For(name).CanOverride("env")
		}
	})
}
