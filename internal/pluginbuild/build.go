package pluginbuild

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	version "github.com/hashicorp/go-version"

	"github.com/soplug/soplug/internal/deploy"
)

// Options is one plugin build. The zero value, given Module, builds the
// module's .so against the running binary into the current folder.
type Options struct {
	// Module is the plugin module's folder: its go.mod and its package
	// main, at the module's root.
	Module string
	// Runner is the runner binary to build against; default the running
	// executable.
	Runner string
	// Out is the folder the result is written to, created if needed;
	// default ".".
	Out string
	// Name is the plugin's name; default the last element of the module
	// path (without a /vN suffix).
	Name string
	// Pkg is the plugin's main package, a path inside Module such as
	// "./cmd/stamp"; default the module's root package. It names the
	// plugin too when Name is empty.
	Pkg string
	// Exec builds the out-of-process executable (-tags soplug_exec)
	// instead of the .so. It needs no pinning beyond the contract.
	Exec bool
	// RequireAcceptable fails a build whose IsAcceptable() is false on
	// this host (plugins install --require-acceptable). Without it such a
	// build, loadable otherwise, is written with a note (Result.Notes).
	RequireAcceptable bool
	// Test runs the module's tests (go test ./...) with the same versions
	// and flags before building.
	Test bool
	// Go is the go command; default "go" on PATH.
	Go string
	// Log receives progress and the go commands' output; nil discards it.
	Log io.Writer
}

// Change is a module version the build changed.
type Change struct {
	// Path is the module path.
	Path string `json:"path"`
	// From is the version the plugin's go.mod requires, To the one built.
	From string `json:"from"`
	To   string `json:"to"`
	// Why is whose version it took: "the runner's version" (a module the
	// runner links, which a plugin must share at its version), or "required
	// by the contract" (an out-of-process build, which shares only that).
	Why string `json:"why"`
}

// Result is what Build made.
type Result struct {
	// File is the written file: Out/<name>_v<Version()>.so, or without .so
	// for an executable.
	File string `json:"file"`
	// Installed is the runner's account of its checks on the file.
	deploy.Installed
	// Toolchain is the Go release the plugin was built with.
	Toolchain string `json:"toolchain"`
	// Flags are the go build flags used.
	Flags []string `json:"flags"`
	// Raised are the plugin's requirements the build raised, each with why.
	Raised []Change `json:"raised,omitempty"`
}

// modFile is what go mod edit -json prints of a go.mod.
type modFile struct {
	Module  struct{ Path string }
	Go      string
	Require []struct {
		Path     string
		Version  string
		Indirect bool
	}
}

// Build builds the plugin module o.Module so that the runner o.Runner loads
// it, and has that runner check and probe the result as install does.
func Build(ctx context.Context, o Options) (res Result, err error) {
	b, err := newBuilder(ctx, o)
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(b.tmp)
	defer func() {
		if err != nil && b.madeOut {
			_ = os.Remove(b.out) // the folder this build made, if still empty: a failed build leaves nothing
		}
	}()
	res.Toolchain = b.target.Toolchain
	res.Flags = b.flags()
	b.logf("building %s (%s) against %s: %s %s", b.mod.Module.Path, b.o.Module, b.target.Path, b.target.Toolchain, strings.Join(res.Flags, " "))

	if err := b.workspace(ctx); err != nil {
		return res, err
	}
	if out, err := b.goCmd(ctx, false, "list", "-f", "{{.Name}}", b.pkg); err != nil {
		return res, err
	} else if name := strings.TrimSpace(string(out)); name != "main" {
		return res, fmt.Errorf("%w: %s in %s is package %s: a plugin is built from a main package; give it with --pkg", ErrModule, b.pkg, b.o.Module, name)
	}
	selected, err := b.selected(ctx)
	if err != nil {
		return res, err
	}
	if !o.Exec {
		if err := b.pin(ctx, selected); err != nil {
			return res, err
		}
	}
	res.Raised = b.raises(selected, !o.Exec)
	for _, c := range res.Raised {
		b.logf("raised %s from %s to %s, %s", c.Path, c.From, c.To, c.Why)
	}
	if o.Test {
		b.logf("testing %s", b.mod.Module.Path)
		args := append(append([]string{"test"}, res.Flags...), "./...")
		if _, err := b.goCmd(ctx, true, args...); err != nil {
			return res, err
		}
	}
	built := filepath.Join(b.tmp, "out", b.name)
	if !o.Exec {
		built += ".so"
	}
	args := append([]string{"build"}, res.Flags...)
	if !o.Exec {
		args = append(args, "-buildmode=plugin")
	}
	if _, err := b.goCmd(ctx, true, append(args, "-o", built, b.pkg)...); err != nil {
		return res, err
	}
	res.Installed, err = b.install(ctx, built)
	if err != nil {
		return res, err
	}
	res.File = filepath.Join(b.out, res.Installed.File)
	b.logf("wrote %s: %s %s (%s)", res.File, res.Name, res.Version, res.Kind)
	return res, nil
}

// builder is one Build's state.
type builder struct {
	o       Options
	target  *Target
	mod     modFile
	name    string
	pkg     string // the main package, "." or "./cmd/x"
	out     string
	madeOut bool   // out did not exist before this build
	tmp     string // the workspace: go.work, soplug/, pins/, out/
	work    bool   // go.work is written
	goBin   string
}

func newBuilder(ctx context.Context, o Options) (*builder, error) {
	b := &builder{o: o}
	var err error
	if o.Runner == "" {
		if o.Runner, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("%w: finding this executable: %w", ErrRunner, err)
		}
	}
	if b.o.Runner, err = filepath.Abs(o.Runner); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRunner, err)
	}
	if b.target, err = ReadTarget(b.o.Runner); err != nil {
		return nil, err
	}
	if b.goBin = o.Go; b.goBin == "" {
		if b.goBin, err = exec.LookPath("go"); err != nil {
			return nil, fmt.Errorf("%w: no go command on PATH: building a plugin needs a Go installation (any release: the runner's is fetched through the module proxy)", ErrGo)
		}
	}
	if o.Module == "" {
		return nil, fmt.Errorf("%w: no module folder given", ErrModule)
	}
	if b.o.Module, err = filepath.Abs(o.Module); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModule, err)
	}
	if _, err := os.Stat(filepath.Join(b.o.Module, "go.mod")); err != nil {
		return nil, fmt.Errorf("%w: %s has no go.mod: give the folder of the plugin's module", ErrModule, b.o.Module)
	}
	if b.out = o.Out; b.out == "" {
		b.out = "."
	}
	if b.out, err = filepath.Abs(b.out); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModule, err)
	}
	if _, err := os.Stat(b.out); errors.Is(err, os.ErrNotExist) {
		b.madeOut = true // removed again if the build fails
	}
	if err := os.MkdirAll(b.out, 0o755); err != nil {
		return nil, fmt.Errorf("pluginbuild: the output folder: %w", err)
	}
	if b.tmp, err = os.MkdirTemp("", "soplug-build-"); err != nil {
		return nil, fmt.Errorf("pluginbuild: %w", err)
	}
	if err := b.readMod(ctx); err != nil {
		os.RemoveAll(b.tmp)
		if b.madeOut {
			_ = os.Remove(b.out)
		}
		return nil, err
	}
	return b, nil
}

// readMod reads the plugin's go.mod (go mod edit -json only reads it) and
// settles the name.
func (b *builder) readMod(ctx context.Context) error {
	out, err := b.goCmd(ctx, false, "mod", "edit", "-json")
	if err != nil {
		return fmt.Errorf("%w: %s/go.mod: %w", ErrModule, b.o.Module, err)
	}
	if err := json.Unmarshal(out, &b.mod); err != nil {
		return fmt.Errorf("%w: %s/go.mod: %w", ErrModule, b.o.Module, err)
	}
	if b.mod.Module.Path == ContractModule {
		return fmt.Errorf("%w: %s is %s itself, not a plugin module", ErrModule, b.o.Module, ContractModule)
	}
	if fi, err := os.Stat(filepath.Join(b.o.Module, "vendor")); err == nil && fi.IsDir() {
		return fmt.Errorf("%w: %s has a vendor/ folder: a plugin must compile the modules it shares with the runner at the runner's versions, which a vendored copy may not be; build from a checkout without vendor/ (the build reads modules from the module cache)", ErrModule, b.o.Module)
	}
	if b.pkg, err = mainPackage(b.o.Module, b.o.Pkg); err != nil {
		return err
	}
	if b.name = b.o.Name; b.name == "" {
		b.name = defaultName(b.mod.Module.Path)
		if b.pkg != "." {
			b.name = path.Base(b.pkg)
		}
	}
	if err := checkName(b.name); err != nil {
		return fmt.Errorf("%w (from module %s; give --name)", err, b.mod.Module.Path)
	}
	runnerGo, err1 := version.NewVersion(langVersion(b.target.Toolchain))
	modGo, err2 := version.NewVersion(b.mod.Go)
	if err1 == nil && err2 == nil && modGo.GreaterThan(runnerGo) {
		return fmt.Errorf("%w: %s/go.mod needs go %s; the runner was built with %s: lower the go line, or build against a newer runner", ErrModule, b.o.Module, b.mod.Go, b.target.Toolchain)
	}
	return nil
}

// mainPackage checks the plugin's main package pkg in module dir ("" is
// the root) and returns it as the go command takes it: "." or "./x/y". A
// path outside the module, a folder with no Go files or a package other
// than main is ErrModule naming it and what to give.
func mainPackage(dir, pkg string) (string, error) {
	rel := filepath.ToSlash(filepath.Clean(filepath.FromSlash(strings.TrimPrefix(pkg, "./"))))
	if pkg == "" {
		rel = "."
	}
	if path.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%w: --pkg %s is not a folder inside the module %s", ErrModule, pkg, dir)
	}
	abs := filepath.Join(dir, filepath.FromSlash(rel))
	entries, err := os.ReadDir(abs)
	if err != nil {
		return "", fmt.Errorf("%w: --pkg %s: %w", ErrModule, pkg, err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".go") && !strings.HasSuffix(e.Name(), "_test.go") {
			if rel == "." {
				return ".", nil
			}
			return "./" + rel, nil
		}
	}
	if rel == "." {
		return "", fmt.Errorf("%w: %s has no Go files at its root: give the plugin's main package with --pkg (e.g. --pkg ./cmd/NAME)", ErrModule, dir)
	}
	return "", fmt.Errorf("%w: --pkg %s: %s holds no Go files", ErrModule, pkg, abs)
}

var majorSuffix = regexp.MustCompile(`/v[0-9]+$`)

func defaultName(modPath string) string {
	return path.Base(majorSuffix.ReplaceAllString(modPath, ""))
}

// flags are the go build flags: the runner's, -trimpath, and the tags.
func (b *builder) flags() []string {
	f := []string{"-trimpath"}
	tags := b.target.Tags
	if b.o.Exec {
		tags = strings.Trim(tags+",soplug_exec", ",")
	}
	if !b.o.Exec {
		f = append(f, b.target.Flags...)
	}
	if tags != "" {
		f = append(f, "-tags="+tags)
	}
	return f
}

// workspace writes the go.work that joins the plugin module with the
// runner's contract module and, for a .so, the pins module.
func (b *builder) workspace(ctx context.Context) error {
	soplugDir := filepath.Join(b.tmp, "soplug")
	cmd := exec.CommandContext(ctx, b.o.Runner, "plugins", "contract", soplugDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s plugins contract: %w: %s (a runner older than plugins build carries no contract source)", ErrRunner, b.target.Path, err, bytes.TrimSpace(out))
	}
	goLine := langVersion(b.target.Toolchain)
	var work strings.Builder
	fmt.Fprintf(&work, "go %s\n\nuse (\n\t%s\n", goLine, quote(b.o.Module))
	if b.target.ContractVersion == "" {
		fmt.Fprintf(&work, "\t./soplug\n")
	}
	if !b.o.Exec {
		fmt.Fprintf(&work, "\t./pins\n")
		if err := b.writePins(goLine); err != nil {
			return err
		}
	}
	fmt.Fprintf(&work, ")\n")
	if v := b.target.ContractVersion; v != "" {
		fmt.Fprintf(&work, "\nreplace %s %s => ./soplug\n", ContractModule, v)
	}
	for _, d := range b.target.Deps {
		if d.Replace != nil && d.Path != ContractModule && !b.o.Exec {
			fmt.Fprintf(&work, "\nreplace %s %s => %s %s\n", d.Path, d.Version, d.Replace.Path, d.Replace.Version)
		}
	}
	if err := os.WriteFile(filepath.Join(b.tmp, "go.work"), []byte(work.String()), 0o644); err != nil {
		return fmt.Errorf("pluginbuild: %w", err)
	}
	b.work = true
	return nil
}

// writePins writes the module that requires every module the runner links
// at the runner's version, so that the workspace selects no older one.
func (b *builder) writePins(goLine string) error {
	var mod strings.Builder
	fmt.Fprintf(&mod, "module soplug.build/pins\n\ngo %s\n\nrequire (\n", goLine)
	for _, d := range b.target.Deps {
		if d.Path == ContractModule && b.target.ContractVersion == "" {
			continue
		}
		fmt.Fprintf(&mod, "\t%s %s\n", d.Path, d.Version)
	}
	fmt.Fprintf(&mod, ")\n")
	dir := filepath.Join(b.tmp, "pins")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pluginbuild: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod.String()), 0o644)
}

func quote(p string) string {
	if strings.ContainsAny(p, " \t\"'`\\") {
		return fmt.Sprintf("%q", p)
	}
	return p
}

// pin checks that the workspace selects (selected) the runner's version of
// every module the runner links: a newer one is ErrNewerModule, with advice.
func (b *builder) pin(ctx context.Context, selected map[string]string) error {
	var newer []string
	var graph []byte // go mod graph, read at the first newer module
	for _, d := range b.target.Deps {
		sel := selected[d.Path]
		if sel == "" || sel == d.Version || d.Path == ContractModule {
			continue
		}
		if !later(sel, d.Version) {
			continue // cannot be older: the pins module requires d.Version
		}
		if graph == nil {
			var err error
			if graph, err = b.goCmd(ctx, false, "mod", "graph"); err != nil {
				return err
			}
		}
		by := requirers(graph, d.Path, sel)
		var others []string
		for _, r := range by {
			if modulePath(r) != b.mod.Module.Path {
				others = append(others, r)
			}
		}
		fix := fmt.Sprintf("require %s %s in %s/go.mod", d.Path, d.Version, b.o.Module)
		if len(others) > 0 {
			// Lowering the plugin's own requirement does not lower what a
			// dependency requires: that dependency must move.
			fix = fmt.Sprintf("use a version of %s that requires at most %s of it (go get %s@VERSION), since raising or lowering it in %s/go.mod cannot go below what they require",
				strings.Join(others, ", "), d.Version, modulePath(others[0]), b.o.Module)
		}
		newer = append(newer, fmt.Sprintf("%s: the plugin needs %s (required by %s), the runner links %s: %s", d.Path, sel, strings.Join(by, ", "), d.Version, fix))
	}
	if len(newer) > 0 {
		return fmt.Errorf("%w: %s; or build a runner that links the newer version and build against it",
			ErrNewerModule, strings.Join(newer, "; "))
	}
	return nil
}

// raises returns the plugin's requirements that the workspace selects at
// another version, each with why: the runner's version (pinned, for a .so
// that shares the modules the runner links) or the contract's requirement
// (any build, and the only reason in an out-of-process one). Nothing moves
// unreported.
func (b *builder) raises(selected map[string]string, pinned bool) []Change {
	var raised []Change
	for _, r := range b.mod.Require {
		if sel := selected[r.Path]; sel != "" && sel != r.Version {
			why := "required by the contract"
			if pinned && b.target.dep(r.Path) != nil {
				why = "the runner's version"
			}
			raised = append(raised, Change{Path: r.Path, From: r.Version, To: sel, Why: why})
		}
	}
	return raised
}

// selected returns the version the workspace selects of every module.
func (b *builder) selected(ctx context.Context) (map[string]string, error) {
	out, err := b.goCmd(ctx, false, "list", "-m", "-json", "all")
	if err != nil {
		return nil, err
	}
	selected := map[string]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var m struct{ Path, Version string }
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return selected, nil
		} else if err != nil {
			return nil, fmt.Errorf("%w: go list -m -json all: %w", ErrGo, err)
		}
		selected[m.Path] = m.Version
	}
}

// later reports whether module version a is later than b.
func later(a, b string) bool {
	va, err1 := version.NewVersion(a)
	vb, err2 := version.NewVersion(b)
	return err1 == nil && err2 == nil && va.GreaterThan(vb)
}

// requirers are the modules that require path at ver in graph, the output
// of go mod graph.
// modulePath is a go mod graph node's module path: "m@v" gives "m".
func modulePath(node string) string {
	m, _, _ := strings.Cut(node, "@")
	return m
}

func requirers(graph []byte, path, ver string) []string {
	var by []string
	for line := range strings.Lines(string(graph)) {
		from, to, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && to == path+"@"+ver && !slices.Contains(by, from) {
			by = append(by, from)
		}
	}
	if len(by) == 0 {
		by = []string{"the module graph"}
	}
	return by
}

// install has the runner check and probe the built file as install does,
// writing it into Out under its canonical name.
func (b *builder) install(ctx context.Context, built string) (deploy.Installed, error) {
	args := []string{"plugins", "install", "--plugins", b.out, "--name", b.name, "--force", "--json"}
	if b.o.RequireAcceptable {
		args = append(args, "--require-acceptable")
	}
	cmd := exec.CommandContext(ctx, b.o.Runner, append(args, built)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var rep struct {
		deploy.Installed
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		return rep.Installed, fmt.Errorf("%w: %s plugins install: %v: %s", ErrRunner, b.target.Path, err, bytes.TrimSpace(append(out, stderr.Bytes()...)))
	}
	if !rep.OK {
		return rep.Installed, fmt.Errorf("%w: %s", ErrRejected, strings.ReplaceAll(rep.Error, built, b.name+" (built from "+b.o.Module+")"))
	}
	return rep.Installed, nil
}

// goCmd runs the go command in the module's folder with the runner's
// toolchain, settings and this build's workspace. show sends its output to
// the log as it runs (the output returned is then empty); otherwise stdout
// is returned and stderr goes into the error.
func (b *builder) goCmd(ctx context.Context, show bool, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, b.goBin, args...)
	cmd.Dir = b.o.Module
	cmd.Env = b.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if show && b.o.Log != nil {
		cmd.Stdout = io.MultiWriter(&stdout, b.o.Log)
		cmd.Stderr = io.MultiWriter(&stderr, b.o.Log)
	}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%w %s: %w\n%s", ErrGo, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// env is the environment of the go commands: this process's, with every
// setting that changes how packages compile replaced by the runner's.
func (b *builder) env() []string {
	drop := append([]string{"GOFLAGS", "GOWORK", "GOTOOLCHAIN"}, envSettings...)
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, k) {
			env = append(env, kv)
		}
	}
	env = append(env, b.target.Env...)
	work := "off" // reading the plugin's go.mod, before the workspace exists
	if b.work {
		work = filepath.Join(b.tmp, "go.work")
	}
	return append(env,
		"GOWORK="+work,
		"GOTOOLCHAIN="+b.target.Toolchain,
		"GOFLAGS=-buildvcs=false", // and none of the environment's (-mod=vendor cannot work here)
	)
}

func (b *builder) logf(format string, args ...any) {
	if b.o.Log != nil {
		fmt.Fprintf(b.o.Log, "runner plugins build: "+format+"\n", args...)
	}
}
