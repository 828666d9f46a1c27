package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/contractsrc"
	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/fixtures"
)

// beforeNATS is a plugin of the kind teams built before the runner linked
// nats.go: it uses the contract and links, besides, a package of each module
// the runner shares with plugins (go-plugin, gRPC and protobuf through
// contract/serve, golang.org/x/sys, fsnotify, go-version, Prometheus, TOML).
const beforeNATS = `package main

import (
	"context"

	_ "github.com/fsnotify/fsnotify"
	_ "github.com/hashicorp/go-version"
	_ "github.com/pelletier/go-toml/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "golang.org/x/sys/unix"

	"github.com/soplug/soplug/contract"
	_ "github.com/soplug/soplug/contract/golem"
	_ "github.com/soplug/soplug/contract/serve"
)

type old struct{}

func (old) Version() string { return "1.0.0" }

func (old) IsAcceptable() bool { return true }

func (old) Transform(_ context.Context, component []byte, _ contract.Config) ([]byte, error) {
	return component, nil
}

func Transformer() contract.Transformer { return old{} }
`

// TestPluginsBuiltBeforeStillLoad: a plugin built against the contract module
// as it was released before the NATS journal (testdata/contract-before-nats.txtar,
// its go.mod and go.sum then) is selected by this runner. A change of the
// version of any package such a plugin shares with the runner makes
// plugin.Open refuse it ("plugin was built with a different version of
// package ..."), and this test fail.
func TestPluginsBuiltBeforeStillLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a plugin")
	}
	require.True(t, fixtures.Trimmed(), "this test binary loads plugins built with -trimpath: run go test -trimpath")
	data, err := os.ReadFile(filepath.Join("testdata", "contract-before-nats.txtar"))
	require.NoError(t, err)
	files, err := contractsrc.Parse(data)
	require.NoError(t, err)
	mod := t.TempDir()
	for _, f := range files {
		p := filepath.Join(mod, filepath.FromSlash(f.Path))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, f.Data, 0o644))
	}
	src := filepath.Join(mod, "plugin_sources", "before", "1.0.0")
	require.NoError(t, os.MkdirAll(src, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "main.go"), []byte(beforeNATS), 0o644))

	plugins := t.TempDir()
	cmd := exec.Command("go", append(append([]string{"build", "-buildmode=plugin"}, fixtures.BuildFlags...),
		"-o", filepath.Join(plugins, "before_v1.0.0.so"), "./plugin_sources/before/1.0.0")...)
	// The module as it was: its go.sum, no workspace, no toolchain switch.
	cmd.Dir, cmd.Env = mod, append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local", "CGO_ENABLED=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "building the plugin against the earlier contract module: %s", out)

	code, stdout, stderr := runner(t, "plugins", "check", "--plugins", plugins, "--state-dir", t.TempDir())
	assert.Equal(t, exitcode.OK, code, "%s%s", stdout, stderr)
	assert.Contains(t, stdout, "selected: before 1.0.0 (transformer) from before_v1.0.0.so", stderr)
}
