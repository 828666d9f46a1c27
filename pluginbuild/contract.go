package pluginbuild

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/soplug/soplug"
)

// ContractModule is the module path of the contract packages.
const ContractModule = "github.com/soplug/soplug"

// WriteContract writes the contract module this binary was built with into
// dir (created if needed): go.mod, go.sum and the non-test Go files of
// contract/, contract/serve/ and contract/golem/. A module that uses it
// through a go.work file compiles the contract exactly as this runner did
// when both are built with -trimpath.
func WriteContract(dir string) error {
	err := fs.WalkDir(soplug.ContractSource, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") {
			return err
		}
		data, err := soplug.ContractSource.ReadFile(path)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		return fmt.Errorf("pluginbuild: writing the contract module into %s: %w", dir, err)
	}
	return nil
}
