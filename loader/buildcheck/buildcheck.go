// Package buildcheck compares how a plugin file and the runner were built,
// without loading the plugin.
//
// Go refuses to load a plugin when a package that both the plugin and the
// runner link was compiled differently: another version of its module,
// another Go toolchain, other flags. It finds out inside dlopen, by
// comparing per-package hashes that the linker writes into both files as
// the symbols go:link.pkghashbytes.<package>. Read reads those hashes and the
// Go build info (debug/buildinfo) from a file, and Compare does what
// plugin.Open will do, with the reason spelled out: for each package whose
// hashes differ, the difference in the build info that explains it
// ("github.com/x/y: plugin v1.2.0, runner v1.3.0", "go: plugin go1.25.5,
// runner go1.26.8").
//
// A module that both contain at different versions is listed as a
// difference but is a conflict only when a package of it is linked into
// both: a plugin may use another version of a module through packages the
// runner does not link, and then it loads.
package buildcheck

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
)

const hashPrefix = "go:link.pkghashbytes."

// Build is what Read learned of one Go binary.
type Build struct {
	// Path is the file read.
	Path string
	// Info is its Go build info.
	Info *debug.BuildInfo
	// PkgHashes maps each package linked into the file, by import path, to
	// the hash Go's plugin loader compares. Empty when the file has no such
	// symbols (a stripped plugin, a binary that does not use plugins).
	PkgHashes map[string]string
}

// Read reads the build info and package hashes of the Go binary at path.
func Read(path string) (*Build, error) {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("buildcheck: %s: no Go build info: %w", path, err)
	}
	b := &Build{Path: path, Info: info, PkgHashes: map[string]string{}}
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("buildcheck: %s: %w", path, err)
	}
	defer f.Close()
	// The dynamic symbol table holds the hashes (the runtime resolves them
	// through it) and is the smaller one; the full table is the fallback.
	for _, typ := range []elf.SectionType{elf.SHT_DYNSYM, elf.SHT_SYMTAB} {
		syms := f.SectionByType(typ)
		if syms == nil {
			continue // stripped
		}
		if err := readHashes(f, syms, b.PkgHashes); err == nil && len(b.PkgHashes) > 0 {
			break
		}
	}
	return b, nil
}

// readHashes adds the package hashes in the symbol table syms to hashes. It
// scans the table in place instead of decoding every symbol: a runner that
// loads plugins exports some 70,000 symbols and holds about 100 hashes,
// and debug/elf's Symbols would allocate them all (11 MB, 23 ms here).
func readHashes(f *elf.File, syms *elf.Section, hashes map[string]string) error {
	if syms.Link == 0 || int(syms.Link) >= len(f.Sections) {
		return errors.New("no string table")
	}
	tab, err := syms.Data()
	if err != nil {
		return err
	}
	str, err := f.Sections[syms.Link].Data()
	if err != nil {
		return err
	}
	size := 24 // Elf64_Sym
	if f.Class == elf.ELFCLASS32 {
		size = 16 // Elf32_Sym
	}
	bo := f.ByteOrder
	prefix := []byte(hashPrefix)
	for off := size; off+size <= len(tab); off += size { // entry 0 is the null symbol
		e := tab[off : off+size]
		name := int(bo.Uint32(e[0:4]))
		if name >= len(str) || !bytes.HasPrefix(str[name:], prefix) {
			continue
		}
		end := bytes.IndexByte(str[name:], 0)
		if end < 0 {
			continue
		}
		var sym elf.Symbol
		if f.Class == elf.ELFCLASS32 {
			sym = elf.Symbol{Value: uint64(bo.Uint32(e[4:8])), Size: uint64(bo.Uint32(e[8:12])), Section: elf.SectionIndex(bo.Uint16(e[14:16]))}
		} else {
			sym = elf.Symbol{Section: elf.SectionIndex(bo.Uint16(e[6:8])), Value: bo.Uint64(e[8:16]), Size: bo.Uint64(e[16:24])}
		}
		if sym.Size == 0 || sym.Size > 64 {
			continue
		}
		if h, err := symbolBytes(f, sym); err == nil {
			hashes[string(str[name+len(prefix):name+end])] = fmt.Sprintf("%x", h)
		}
	}
	return nil
}

// symbolBytes returns the bytes of a symbol that lies in a section with
// file content.
func symbolBytes(f *elf.File, s elf.Symbol) ([]byte, error) {
	if int(s.Section) >= len(f.Sections) {
		return nil, errors.New("no section")
	}
	sec := f.Sections[s.Section]
	if sec.Type == elf.SHT_NOBITS || s.Value < sec.Addr || s.Value+s.Size > sec.Addr+sec.Size {
		return nil, errors.New("not in the section's content")
	}
	buf := make([]byte, s.Size)
	if _, err := sec.ReadAt(buf, int64(s.Value-sec.Addr)); err != nil {
		return nil, err
	}
	return buf, nil
}

var self struct {
	once  sync.Once
	build *Build
	err   error
}

// Self reads the running executable, once.
func Self() (*Build, error) {
	self.once.Do(func() {
		exe, err := os.Executable()
		if err != nil {
			self.err = fmt.Errorf("buildcheck: finding this executable: %w", err)
			return
		}
		self.build, self.err = Read(exe)
	})
	return self.build, self.err
}

// Difference is one way two builds differ: the Go version, a build setting
// or a module's version or checksum.
type Difference struct {
	// Name is "go", a setting ("CGO_ENABLED", "-race", "-tags", ...) or a
	// module path.
	Name string `json:"name"`
	// Plugin and Runner are the two values; "(none)" where one side has
	// none.
	Plugin string `json:"plugin"`
	Runner string `json:"runner"`
}

// String returns "NAME: plugin P, runner R".
func (d Difference) String() string {
	return fmt.Sprintf("%s: plugin %s, runner %s", d.Name, d.Plugin, d.Runner)
}

// Conflict is a package both builds link with different hashes: the reason
// plugin.Open will give.
type Conflict struct {
	// Package is the import path.
	Package string `json:"package"`
	// Causes are the differences that explain it: its module's, or, for a
	// package of the standard library or one whose module matches, the
	// toolchain's and the settings'. Empty when nothing in the build info
	// explains it (e.g. the same version built from edited sources).
	Causes []Difference `json:"causes,omitempty"`
	// Through are, when no cause of its own shows, the module differences
	// of the two builds: a package's hash covers those of the packages it
	// imports, so one of these modules, linked beneath it, changes it too.
	Through []Difference `json:"through,omitempty"`
	// Untrimmed is set when no cause shows and neither build used
	// -trimpath: their hashes then hold the folder each was built in, so
	// the same sources in two checkouts differ.
	Untrimmed bool `json:"untrimmed,omitempty"`
	// Hint says what to do, for a package of soplug's own module (the
	// contract): build the plugin with runner plugins build.
	Hint string `json:"hint,omitempty"`
}

// contractModule is soplug's module, whose contract packages a plugin must
// compile exactly as the runner did.
const contractModule = "github.com/soplug/soplug"

// contractHint is the Hint of a conflict in a package of contractModule.
const contractHint = "a plugin must compile the contract from the runner's own source, in the runner's layout, with -trimpath: " +
	"build it with `runner plugins build MODULE_DIR`, which takes the contract, the Go release, the flags and the module versions from the runner " +
	"(a copy of the contract in a replaced or required module compiles as github.com/soplug/soplug@VERSION/... and differs from a runner built in a checkout)"

// String returns the conflict as a reason.
func (c Conflict) String() string {
	s := c.reason()
	if c.Hint != "" {
		s += "; " + c.Hint
	}
	return s
}

func (c Conflict) reason() string {
	s := "package " + c.Package + " differs"
	switch {
	case len(c.Causes) == 0 && len(c.Through) > 0:
		var ds []string
		for _, d := range c.Through {
			ds = append(ds, d.String())
		}
		return s + " (its own module matches; through a package it imports from a module that differs: " + strings.Join(ds, "; ") + ")"
	case len(c.Causes) == 0 && c.Untrimmed:
		return s + " (the build info shows no other cause, and neither was built with -trimpath: the package hashes then hold the path of the checkout each was built in, so two checkouts of the same sources differ; build the runner and the plugins with -trimpath, or from the same checkout path)"
	case len(c.Causes) == 0:
		return s + " (the build info shows no cause: the same module version built from other sources?)"
	}
	var causes []string
	for _, d := range c.Causes {
		causes = append(causes, d.String())
	}
	return s + " (" + strings.Join(causes, "; ") + ")"
}

// Report is the comparison of a plugin's build with the runner's.
type Report struct {
	// Differences are every difference in the build info, compatible or not.
	Differences []Difference `json:"differences,omitempty"`
	// Toolchain are the differences of Go version and build settings, which
	// change every package.
	Toolchain []Difference `json:"toolchain,omitempty"`
	// Conflicts are the packages that keep the plugin from loading.
	Conflicts []Conflict `json:"conflicts,omitempty"`
	// Checked is the number of packages both builds link, whose hashes were
	// compared; zero when either side had no package hashes.
	Checked int `json:"checked"`
}

// Compatible reports whether no package conflicts.
func (r Report) Compatible() bool { return len(r.Conflicts) == 0 }

// settings are the build settings that change how packages compile.
var settings = []string{"GOOS", "GOARCH", "GOAMD64", "GOARM", "GOARM64", "GO386", "GOPPC64", "GORISCV64",
	"CGO_ENABLED", "-compiler", "-trimpath", "-race", "-msan", "-asan", "-tags", "-gcflags", "GOEXPERIMENT"}

// Compare compares a plugin's build with the runner's.
func Compare(plugin, runner *Build) Report {
	var r Report
	toolchain := toolchainDiffs(plugin.Info, runner.Info)
	r.Toolchain = toolchain
	r.Differences = append(r.Differences, toolchain...)
	pmods, rmods := modules(plugin.Info), modules(runner.Info)
	for _, path := range slices.Sorted(mapKeys(pmods)) {
		rm, ok := rmods[path]
		if !ok {
			continue
		}
		if d, differs := moduleDiff(path, pmods[path], rm); differs {
			r.Differences = append(r.Differences, d)
		}
	}
	moduleDiffs := r.Differences[len(toolchain):]
	for _, pkg := range slices.Sorted(mapKeys(plugin.PkgHashes)) {
		rh, ok := runner.PkgHashes[pkg]
		if !ok {
			continue
		}
		r.Checked++
		if rh == plugin.PkgHashes[pkg] {
			continue
		}
		c := Conflict{Package: pkg, Causes: Explain(plugin, runner, pkg)}
		if len(c.Causes) == 0 {
			c.Through = moduleDiffs
		}
		c.Untrimmed = len(c.Causes) == 0 && len(c.Through) == 0 && settingsOf(plugin.Info)["-trimpath"] == "false" && settingsOf(runner.Info)["-trimpath"] == "false"
		if pkg == contractModule || strings.HasPrefix(pkg, contractModule+"/") {
			c.Hint = contractHint
		}
		r.Conflicts = append(r.Conflicts, c)
	}
	return r
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// toolchainDiffs compares the Go version and the settings that change code.
func toolchainDiffs(p, r *debug.BuildInfo) []Difference {
	var out []Difference
	if p.GoVersion != r.GoVersion {
		out = append(out, Difference{Name: "go", Plugin: p.GoVersion, Runner: r.GoVersion})
	}
	ps, rs := settingsOf(p), settingsOf(r)
	for _, k := range settings {
		if ps[k] != rs[k] {
			out = append(out, Difference{Name: k, Plugin: none(ps[k]), Runner: none(rs[k])})
		}
	}
	return out
}

func settingsOf(bi *debug.BuildInfo) map[string]string {
	m := map[string]string{}
	for _, s := range bi.Settings {
		m[s.Key] = s.Value
	}
	// Defaults that the build info leaves out.
	if m["-trimpath"] == "" {
		m["-trimpath"] = "false"
	}
	if m["-race"] == "" {
		m["-race"] = "false"
	}
	return m
}

func none(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// modules returns the modules a build contains, by path: the main module
// and the dependencies, each as replaced.
func modules(bi *debug.BuildInfo) map[string]*debug.Module {
	m := map[string]*debug.Module{}
	if bi.Main.Path != "" {
		main := bi.Main
		m[main.Path] = &main
	}
	for _, d := range bi.Deps {
		m[d.Path] = d
	}
	return m
}

// moduleDiff compares one module's version, after replacement, and its
// checksum when the versions are the same.
func moduleDiff(path string, p, r *debug.Module) (Difference, bool) {
	pv, rv := describe(p), describe(r)
	if pv == rv {
		ps, rs := sum(p), sum(r)
		if ps == rs {
			return Difference{}, false
		}
		pv, rv = pv+" "+none(ps), rv+" "+none(rs)
	}
	return Difference{Name: path, Plugin: pv, Runner: rv}, true
}

// describe is a module's version, or its replacement.
func describe(m *debug.Module) string {
	if m.Replace != nil {
		return strings.TrimSpace("=> " + m.Replace.Path + " " + m.Replace.Version)
	}
	return m.Version
}

func sum(m *debug.Module) string {
	if m.Replace != nil {
		return m.Replace.Sum
	}
	return m.Sum
}

// Explain returns the differences that can explain why plugin.Open found
// pkg built differently: its module's, then the toolchain's.
func Explain(plugin, runner *Build, pkg string) []Difference {
	var out []Difference
	pm, rm := owner(pkg, modules(plugin.Info)), owner(pkg, modules(runner.Info))
	switch {
	case pm != nil && rm != nil && pm.Path == rm.Path:
		if d, differs := moduleDiff(pm.Path, pm, rm); differs {
			out = append(out, d)
		}
	case pm != nil && pm.Path != plugin.Info.Main.Path:
		// The runner links the package but its build info does not say from
		// which module version (a test binary records none).
		out = append(out, Difference{Name: pm.Path, Plugin: describe(pm), Runner: "(not recorded)"})
	}
	return append(out, toolchainDiffs(plugin.Info, runner.Info)...)
}

// owner returns the module whose path is the longest prefix of pkg.
func owner(pkg string, mods map[string]*debug.Module) *debug.Module {
	var best *debug.Module
	for path, m := range mods {
		if (pkg == path || strings.HasPrefix(pkg, path+"/")) && (best == nil || len(path) > len(best.Path)) {
			best = m
		}
	}
	return best
}

// Summary returns the conflicts as one reason, or "" when compatible.
func (r Report) Summary() string {
	if r.Compatible() {
		return ""
	}
	if len(r.Toolchain) > 0 {
		var ds []string
		for _, d := range r.Toolchain {
			ds = append(ds, d.String())
		}
		return fmt.Sprintf("built with another Go toolchain or other flags (%s): %d of %d shared packages differ, among them %s",
			strings.Join(ds, "; "), len(r.Conflicts), r.Checked, r.Conflicts[0].Package)
	}
	// The conflict shown is the first with a cause of its own (a module
	// that differs explains the packages above it, which sort earlier).
	lead := r.Conflicts[0]
	for _, c := range r.Conflicts {
		if len(c.Causes) > 0 {
			lead = c
			break
		}
	}
	s := lead.String()
	if n := len(r.Conflicts) - 1; n > 0 {
		s += fmt.Sprintf(", and %d more package(s)", n)
	}
	return s
}
