package contractsrc_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/contractsrc"
	"github.com/soplug/soplug/internal/fixtures"
)

const comment = `The contract module's source, embedded in the runner by package contractsrc.
Generated from go.mod (the requirements the contract packages need), go.sum and contract/: do not edit; run go generate ./internal/contractsrc.
`

// contractGoMod is the archive's go.mod: the module's module and go lines,
// and a requirement of each module a package of the contract imports (the
// closure), at the version this module selects. Only what plugins share
// with the runner through the contract: a team's other modules (an older
// wazero, say) are not raised to the versions soplug's own tests use.
func contractGoMod(t *testing.T, root string) []byte {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}}{{end}}{{end}}",
		"./contract", "./contract/serve", "./contract/golem")
	cmd.Dir = root
	out, err := cmd.Output()
	require.NoError(t, err, "go list of the contract's dependencies")
	var reqs []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(reqs, l) {
			reqs = append(reqs, l)
		}
	}
	sort.Strings(reqs)
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	var b strings.Builder
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "module ") || strings.HasPrefix(l, "go ") || strings.HasPrefix(l, "toolchain ") {
			b.WriteString(l + "\n\n")
		}
	}
	b.WriteString("// The modules the contract packages import, and only those: written by\n// go generate ./internal/contractsrc from soplug's go.mod.\nrequire (\n")
	for _, r := range reqs {
		b.WriteString("\t" + r + "\n")
	}
	b.WriteString(")\n")
	return []byte(b.String())
}

// sources reads the files the archive must hold from the module root.
func sources(t *testing.T) []contractsrc.File {
	t.Helper()
	root := fixtures.Root()
	names := []string{"go.mod", "go.sum"}
	for _, dir := range []string{"contract", "contract/serve", "contract/golem"} {
		m, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(dir), "*.go"))
		require.NoError(t, err)
		for _, p := range m {
			if !strings.HasSuffix(p, "_test.go") {
				names = append(names, dir+"/"+filepath.Base(p))
			}
		}
	}
	sort.Strings(names)
	var files []contractsrc.File
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(n)))
		require.NoError(t, err)
		if n == "go.mod" {
			data = contractGoMod(t, root)
		}
		files = append(files, contractsrc.File{Path: n, Data: data})
	}
	return files
}

// TestArchiveIsCurrent fails while contract.txtar differs from the files
// it is made of; with SOPLUG_UPDATE_CONTRACTSRC=1 it rewrites it.
func TestArchiveIsCurrent(t *testing.T) {
	want := sources(t)
	require.NotEmpty(t, want)
	if os.Getenv("SOPLUG_UPDATE_CONTRACTSRC") == "1" {
		data, err := contractsrc.Format(comment, want)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(fixtures.Root(), "internal", "contractsrc", "contract.txtar"), data, 0o644))
		t.Log("contract.txtar rewritten: build again to embed it")
		return
	}
	got, err := contractsrc.Files()
	require.NoError(t, err)
	var gotNames, wantNames []string
	for _, f := range got {
		gotNames = append(gotNames, f.Path)
	}
	for _, f := range want {
		wantNames = append(wantNames, f.Path)
	}
	require.Equal(t, wantNames, gotNames, "contract.txtar is stale: run go generate ./internal/contractsrc")
	for i := range want {
		assert.Equal(t, string(want[i].Data), string(got[i].Data), "%s differs from contract.txtar: run go generate ./internal/contractsrc", want[i].Path)
	}
}

func TestFormatParseRoundTrip(t *testing.T) {
	files := []contractsrc.File{
		{Path: "go.mod", Data: []byte("module x\n")},
		{Path: "a/b.go", Data: []byte("package b\n// -- not a marker\n-- nor this\n")},
		{Path: "empty", Data: nil},
	}
	data, err := contractsrc.Format("a comment\n", files)
	require.NoError(t, err)
	got, err := contractsrc.Parse(data)
	require.NoError(t, err)
	assert.Equal(t, files, got)
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct{ name, archive, err string }{
		{"absolute", "-- /etc/passwd --\nx\n", `bad path "/etc/passwd"`},
		{"dot-dot", "-- ../x --\nx\n", `bad path "../x"`},
		{"unclean", "-- a//b --\nx\n", `bad path "a//b"`},
		{"twice", "-- a --\nx\n-- a --\ny\n", "a twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := contractsrc.Parse([]byte(tc.archive))
			require.ErrorIs(t, err, contractsrc.ErrArchive)
			assert.Contains(t, err.Error(), tc.err)
		})
	}
}

func TestFormatRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		file contractsrc.File
		err  string
	}{
		{"no final newline", contractsrc.File{Path: "a", Data: []byte("x")}, "a does not end with a newline"},
		{"a marker line", contractsrc.File{Path: "a", Data: []byte("-- b --\n")}, "reads as a file marker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := contractsrc.Format("", []contractsrc.File{tc.file})
			require.ErrorIs(t, err, contractsrc.ErrArchive)
			assert.Contains(t, err.Error(), tc.err)
		})
	}
}
