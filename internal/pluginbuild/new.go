package pluginbuild

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"text/template"

	"github.com/soplug/soplug/loader"
)

//go:embed template
var templates embed.FS

// Kinds of plugin New writes.
const (
	KindTransformer = "transformer"
	KindOplog       = "oplog"
)

// NewOptions is what New writes. The zero value (but for Name) writes a
// Transformer module example.com/<Name> in the folder <Name>.
type NewOptions struct {
	// Name is the plugin's name, as in its file name <name>_v<version>.so.
	Name string
	// Dir is the folder to write, which must be empty or absent; default
	// Name.
	Dir string
	// Kind is KindTransformer (default) or KindOplog.
	Kind string
	// Module is the module path; default example.com/<Name>.
	Module string
	// Go is the go line of go.mod; default the Go release of this binary.
	Go string
}

// New writes a plugin module that Build turns into a loadable file
// unchanged: go.mod, the plugin with Version, IsAcceptable and its accessor,
// a test, main_so.go for the .so and main_exec.go for the out-of-process
// executable, a .gitignore, and this runner's contract module in
// ContractDir, which go.mod replaces soplug with, so that the module is an
// ordinary one (after Tidy writes its go.sum). It returns the files
// written.
func New(o NewOptions) ([]string, error) {
	if err := checkName(o.Name); err != nil {
		return nil, err
	}
	if o.Dir == "" {
		o.Dir = o.Name
	}
	if o.Kind == "" {
		o.Kind = KindTransformer
	}
	if o.Kind != KindTransformer && o.Kind != KindOplog {
		return nil, fmt.Errorf("%w: kind %q: want %s or %s", ErrModule, o.Kind, KindTransformer, KindOplog)
	}
	if o.Module == "" {
		o.Module = "example.com/" + o.Name
	}
	if o.Go == "" {
		o.Go = langVersion(runtime.Version())
	}
	if entries, err := os.ReadDir(o.Dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%w: %s holds %d file(s); New writes only into an empty or new folder", ErrExists, o.Dir, len(entries))
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s: %w", ErrModule, o.Dir, err)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModule, err)
	}
	var written []string
	for _, sub := range []string{"template/common", "template/" + o.Kind} {
		entries, err := templates.ReadDir(sub)
		if err != nil {
			return written, err
		}
		for _, e := range entries {
			// [[ ]]: Go composite literals in the templates hold {{ }}.
			t, err := template.New(e.Name()).Delims("[[", "]]").ParseFS(templates, path.Join(sub, e.Name()))
			if err != nil {
				return written, err
			}
			var buf bytes.Buffer
			if err := t.Execute(&buf, o); err != nil {
				return written, err
			}
			name := strings.TrimSuffix(e.Name(), ".tmpl")
			if rest, ok := strings.CutPrefix(name, "dot-"); ok {
				name = "." + rest // go:embed leaves out dotfiles: dot-NAME.tmpl is .NAME
			}
			dst := filepath.Join(o.Dir, name)
			if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
				return written, fmt.Errorf("%w: %w", ErrModule, err)
			}
			written = append(written, dst)
		}
	}
	contract := filepath.Join(o.Dir, ContractDir)
	if err := WriteContract(contract); err != nil {
		return written, err
	}
	return append(written, contract), nil
}

// ContractDir is the folder in a module New writes where the contract
// module goes, replaced for github.com/soplug/soplug in its go.mod. The go
// command's ./... leaves a folder whose name starts with a dot out.
const ContractDir = ".soplug"

// Tidy runs go mod tidy in the module at dir (no workspace), which writes
// its go.sum: after it go build, test and vet ./... work there.
func Tidy(ctx context.Context, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "mod", "tidy")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: go mod tidy in %s: %w: %s", ErrGo, dir, err, bytes.TrimSpace(out))
	}
	return nil
}

// checkName refuses a name that cannot name a plugin file.
func checkName(name string) error {
	n, _, _, err := loader.ParseName(name + "_v1.0.0.so")
	if err != nil || n != name {
		return fmt.Errorf("%w: %q cannot name a plugin: use letters, digits, '.', '-' and '_' (not first or last, no '_v' before a digit)", ErrModule, name)
	}
	return nil
}

// langVersion is the go line for a toolchain name: "go1.26.8 X:..." gives
// "1.26.8"; a development toolchain gives the bare release.
func langVersion(goVersion string) string {
	v, _, _ := strings.Cut(strings.TrimPrefix(goVersion, "go"), " ")
	if v == "" || strings.HasPrefix(v, "devel") {
		return "1.26"
	}
	return v
}
