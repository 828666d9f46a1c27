package pluginconf_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/pluginconf"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "plugins.toml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

const good = `# installations
chain = ["wasmtag", "wasmdigest"]

[plugins.wasmtag]
overridable = ["env", "env"]

[plugins.wasmtag.config]
team = "edge"
env = "prod"

[plugins.wasmdigest]
config = { algorithm = "sha256" }
golem_drop_extras = true
`

func TestLoad(t *testing.T) {
	path := write(t, good)
	f, err := pluginconf.Load(path)
	require.NoError(t, err)
	assert.Equal(t, []string{"wasmtag", "wasmdigest"}, f.Chain)
	assert.Equal(t, contract.Config{"team": "edge", "env": "prod"}, f.For("wasmtag").Config)
	assert.Equal(t, []string{"env"}, f.For("wasmtag").Overridable)
	assert.True(t, f.For("wasmtag").CanOverride("env"))
	assert.False(t, f.For("wasmtag").CanOverride("team"))
	assert.Equal(t, contract.Config{"algorithm": "sha256"}, f.For("wasmdigest").Config)
	assert.True(t, f.For("wasmdigest").GolemDropExtras)
	assert.False(t, f.For("wasmtag").GolemDropExtras)
	assert.Equal(t, contract.Config{}, f.For("kindcount").Config, "an unconfigured plugin gets an empty config")
	assert.Equal(t, 8, f.Line("plugins.wasmtag.config.team"))
	assert.Equal(t, 12, f.Line("plugins.wasmdigest.config.algorithm"))
	assert.Equal(t, 4, f.Line("plugins.wasmtag"))
	require.NoError(t, f.Validate([]string{"wasmtag", "wasmdigest", "kindcount"}))
}

// TestBadFiles: every mistake is an error naming the file and the line,
// wrapping the sentinel.
func TestBadFiles(t *testing.T) {
	cases := []struct {
		name, body string
		sentinel   error
		want       string // after "<path>:"
	}{
		{"not toml", "chain = [\"a\"\n[plugins", pluginconf.ErrSyntax, "2:1: toml: expected"},
		{"unknown top-level", "chian = [\"a\"]\n", pluginconf.ErrInvalid, `1: unknown setting "chian"`},
		{"unknown plugin setting", "[plugins.a]\nconfg = {}\n", pluginconf.ErrInvalid, `2: unknown setting "plugins.a.confg"`},
		{"integer value", "[plugins.a.config]\nok = \"1\"\nlevel = 3\n", pluginconf.ErrInvalid, `3: plugins.a.config.level: the value must be a string, not an integer (quote it: level = "3")`},
		{"table value", "[plugins.a]\nconfig = { x = { y = \"z\" } }\n", pluginconf.ErrInvalid, "2: plugins.a.config.x: the value must be a string, not a table"},
		{"bad key", "[plugins.a.config]\n\"has space\" = \"v\"\n", pluginconf.ErrInvalid, `2: key "has space"`},
		{"chain not a list", "chain = \"a\"\n", pluginconf.ErrSyntax, "1:"},
		{"chain twice", "chain = [\"a\", \"a\"]\n", pluginconf.ErrInvalid, `1: chain names "a" twice`},
		{"overridable not a list", "[plugins.a]\noverridable = \"env\"\n", pluginconf.ErrSyntax, "2:"},
		{"golem_drop_extras not a boolean", "[plugins.a]\ngolem_drop_extras = \"yes\"\n", pluginconf.ErrSyntax, "2:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, tc.body)
			_, err := pluginconf.Load(path)
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.sentinel)
			assert.Contains(t, err.Error(), path+":"+tc.want)
		})
	}
}

func TestValidate(t *testing.T) {
	path := write(t, "chain = [\"wasmtag\", \"nosuch\"]\n\n[plugins.wasmtgg.config]\nteam = \"edge\"\n")
	f, err := pluginconf.Load(path)
	require.NoError(t, err)
	err = f.Validate([]string{"wasmtag", "kindcount"})
	require.ErrorIs(t, err, pluginconf.ErrInvalid)
	assert.Contains(t, err.Error(), path+`:3: unknown plugin "wasmtgg" (installed: kindcount, wasmtag)`)
	assert.Contains(t, err.Error(), path+`:1: chain names unknown plugin "nosuch"`)
}

func TestLoadErrors(t *testing.T) {
	_, err := pluginconf.Load(filepath.Join(t.TempDir(), "missing.toml"))
	assert.ErrorIs(t, err, os.ErrNotExist)

	big := write(t, "# "+string(make([]byte, pluginconf.MaxFileSize)))
	_, err = pluginconf.Load(big)
	assert.ErrorIs(t, err, pluginconf.ErrSyntax)
	assert.Contains(t, err.Error(), "larger than")
}

func TestZeroFile(t *testing.T) {
	var f pluginconf.File
	assert.Equal(t, contract.Config{}, f.For("any").Config)
	assert.NoError(t, f.Validate(nil))
}

// TestCanOverride: a listed key; with "*" every key Golem's installations
// may have (spaces, '=', non-ASCII), never an empty one, "*" itself, a
// control character or invalid UTF-8.
func TestCanOverride(t *testing.T) {
	listed := pluginconf.Installation{Overridable: []string{"env"}}
	all := pluginconf.Installation{Overridable: []string{pluginconf.AnyKey}}
	for _, tc := range []struct {
		in   pluginconf.Installation
		key  string
		want bool
	}{
		{listed, "env", true},
		{listed, "team", false},
		{all, "team", true},
		{all, "a b", true},
		{all, "key=value", true},
		{all, "clé/ü 名前", true},
		{all, "", false},
		{all, "*", false},
		{all, "a\nb", false},
		{all, "a\x00b", false},
		{all, "\xff", false},
		{listed, "*", false},
		{pluginconf.Installation{}, "env", false},
	} {
		assert.Equal(t, tc.want, tc.in.CanOverride(tc.key), "%v %q", tc.in.Overridable, tc.key)
	}
	f := write(t, "[plugins.p]\noverridable = [\"*\"]\n")
	conf, err := pluginconf.Load(f)
	require.NoError(t, err)
	assert.True(t, conf.For("p").CanOverride("anything"))
}
