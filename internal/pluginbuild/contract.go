package pluginbuild

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/soplug/soplug/internal/contractsrc"
)

// ContractModule is the module path of the contract packages.
const ContractModule = "github.com/soplug/soplug"

// WriteContract writes the contract module this binary was built with into
// dir (created if needed): go.mod, go.sum and the non-test Go files of
// contract/, contract/serve/ and contract/golem/. A module that uses it
// through a go.work file compiles the contract exactly as this runner did
// when both are built with -trimpath.
func WriteContract(dir string) error {
	files, err := contractsrc.Files()
	if err == nil {
		for _, f := range files {
			dst := filepath.Join(dir, filepath.FromSlash(f.Path))
			if err = os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				break
			}
			if err = os.WriteFile(dst, f.Data, 0o644); err != nil {
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("pluginbuild: writing the contract module into %s: %w", dir, err)
	}
	return nil
}
