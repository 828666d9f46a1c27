package pluginbuild

import (
	"debug/buildinfo"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
)

// Target is what a runner binary says about how it was built: everything a
// plugin build must repeat for the plugin to load into it.
type Target struct {
	// Path is the runner binary.
	Path string
	// Toolchain is the Go release that built it ("go1.26.8"), for
	// GOTOOLCHAIN.
	Toolchain string
	// Flags are the go build flags that change how packages compile
	// (-race, -msan, -asan, -tags, -gcflags, -asmflags).
	Flags []string
	// Env are the settings given as environment (CGO_ENABLED, GOOS, GOARCH,
	// GOAMD64, GOEXPERIMENT, CGO_CFLAGS, ...), as KEY=VALUE.
	Env []string
	// Tags is the value of -tags ("" when none).
	Tags string
	// Deps are the modules the runner links, as its build info lists them.
	Deps []*debug.Module
	// ContractVersion is "" when the contract packages are in the runner's
	// main module (a build from a checkout), or the version of
	// github.com/soplug/soplug they came from (go install ...@version, or a
	// runner that depends on soplug).
	ContractVersion string
}

// envSettings are the build settings recorded under their environment
// variable's name.
var envSettings = []string{"CGO_ENABLED", "GOOS", "GOARCH", "GOAMD64", "GOARM", "GOARM64", "GO386",
	"GOPPC64", "GORISCV64", "GOMIPS", "GOMIPS64", "GOWASM", "GOEXPERIMENT",
	"CGO_CFLAGS", "CGO_CPPFLAGS", "CGO_CXXFLAGS", "CGO_FFLAGS", "CGO_LDFLAGS"}

// ReadTarget reads how the runner binary at path was built, and refuses one
// that no build elsewhere can match.
func ReadTarget(path string) (*Target, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: not a Go binary with build info: %w", ErrRunner, path, err)
	}
	return targetOf(path, bi)
}

func targetOf(path string, bi *debug.BuildInfo) (*Target, error) {
	t := &Target{Path: path, Deps: bi.Deps}
	t.Toolchain, _, _ = strings.Cut(bi.GoVersion, " ")
	if !strings.HasPrefix(t.Toolchain, "go1.") {
		return nil, fmt.Errorf("%w: %s was built by %q, not a Go release the module proxy serves", ErrRunner, path, bi.GoVersion)
	}
	set := map[string]string{}
	for _, s := range bi.Settings {
		set[s.Key] = s.Value
	}
	if set["-trimpath"] != "true" {
		return nil, fmt.Errorf("%w: %s was built without -trimpath: its packages hold the path of the folder it was built in, which no other build can repeat; build it with go build -trimpath", ErrRunner, path)
	}
	if set["CGO_ENABLED"] != "1" {
		return nil, fmt.Errorf("%w: %s was built with CGO_ENABLED=%s: a runner without cgo loads no plugin", ErrRunner, path, set["CGO_ENABLED"])
	}
	if set["-buildmode"] != "" && set["-buildmode"] != "exe" && set["-buildmode"] != "pie" {
		return nil, fmt.Errorf("%w: %s is a %s build, not a runner", ErrRunner, path, set["-buildmode"])
	}
	for _, k := range []string{"-race", "-msan", "-asan"} {
		if set[k] == "true" {
			t.Flags = append(t.Flags, k)
		}
	}
	for _, k := range []string{"-gcflags", "-asmflags"} {
		if v := set[k]; v != "" {
			t.Flags = append(t.Flags, k+"="+v)
		}
	}
	t.Tags = set["-tags"]
	for _, k := range envSettings {
		if v, ok := set[k]; ok {
			t.Env = append(t.Env, k+"="+v)
		}
	}

	switch {
	case bi.Main.Path == ContractModule && bi.Main.Sum == "":
		// Built in a checkout: the contract is in the main module.
	case bi.Main.Path == ContractModule:
		t.ContractVersion = bi.Main.Version
	default:
		i := slices.IndexFunc(bi.Deps, func(m *debug.Module) bool { return m.Path == ContractModule })
		if i < 0 {
			return nil, fmt.Errorf("%w: %s does not link %s", ErrRunner, path, ContractModule)
		}
		t.ContractVersion = bi.Deps[i].Version
	}
	for _, d := range bi.Deps {
		if d.Replace != nil && d.Replace.Version == "" && d.Path != ContractModule {
			return nil, fmt.Errorf("%w: %s was built with %s replaced by the folder %s, which a build elsewhere cannot repeat", ErrRunner, path, d.Path, d.Replace.Path)
		}
	}
	return t, nil
}

// dep returns the module path as the runner links it, nil when it links
// none.
func (t *Target) dep(path string) *debug.Module {
	for _, d := range t.Deps {
		if d.Path == path {
			return d
		}
	}
	return nil
}
