package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/transform"
	"github.com/soplug/soplug/internal/wasm"
)

// wasmInput reads a WebAssembly test input from testdata/wasm.
func wasmInput(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "wasm", name))
	require.NoError(t, err)
	return b
}

const e2eConfig = `# the end-to-end test's installation
chain = ["wasmtag", "wasmdigest"]

[plugins.wasmtag]
overridable = ["env"]
config = { team = "edge", env = "prod" }

[plugins.wasmdigest]
overridable = ["algorithm"]
config = { algorithm = "sha256" }
`

// transformRunner starts the runner on the example transformers and the
// faulty fixture, configured by e2eConfig, with a 4 MiB body limit and a
// 500 ms deadline. It returns the process, its address and the config file.
func transformRunner(t *testing.T) (*daemonProc, string, string) {
	t.Helper()
	dir := copyPlugins(t, "wasmtag_v1.0.0.so", "wasmtag_v1.1.0.so", "wasmdigest_v1.0.0.so", "faulty=faulty_v1.0.0.so")
	conf := filepath.Join(t.TempDir(), "plugins.toml")
	require.NoError(t, os.WriteFile(conf, []byte(e2eConfig), 0o644))
	d := start(t, dir, "--config", conf, "--max-body", strconv.Itoa(4<<20), "--transform-timeout", "500ms")
	addr := <-d.addr
	d.waitLog(t, `msg=ready status="serving faulty 1.0.0, wasmdigest 1.0.0, wasmtag 1.1.0"`)
	return d, addr, conf
}

func postWasm(t *testing.T, url string, body []byte) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/wasm", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, out
}

// TestTransformEndToEnd posts real WebAssembly files through the chain
// wasmtag → wasmdigest of a running runner, checks the outputs with
// wazero, then every error status, then /metrics.
func TestTransformEndToEnd(t *testing.T) {
	t.Parallel()
	_, addr, _ := transformRunner(t)
	base := "http://" + addr

	for _, name := range []string{"hello.wasm", "module.wasm", "component.wasm"} {
		t.Run(name, func(t *testing.T) {
			in := wasmInput(t, name)
			resp, out := postWasm(t, base+"/v1/transform", in)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out)
			assert.Equal(t, "wasmtag, wasmdigest", resp.Header.Get(transform.HeaderPlugin))
			assert.Equal(t, "1.1.0, 1.0.0", resp.Header.Get(transform.HeaderVersion))
			require.Equal(t, in, out[:len(in)], "the input's bytes come first, unchanged")

			kind, err := wasm.Check(out)
			require.NoError(t, err)
			sections := map[string]string{}
			if kind == wasm.Module {
				sections = compile(t, out)
			} else {
				// No Go library parses components; the section walk
				// checks that the appended sections tile the binary.
				for _, n := range []string{"soplug.wasmtag", "soplug.digest"} {
					p, ok := wasm.CustomSection(out, n)
					require.True(t, ok, n)
					sections[n] = string(p)
				}
			}
			assert.Equal(t, "wasmtag 1.1.0\nenv=prod\nteam=edge\n", sections["soplug.wasmtag"])
			resp, tagged := postWasm(t, base+"/v1/transform/wasmtag", in)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", tagged)
			sum := sha256.Sum256(tagged)
			assert.Equal(t, "sha256:"+hex.EncodeToString(sum[:])+"\n", sections["soplug.digest"], "the digest covers the tagged binary")
		})
	}

	t.Run("the transformed program still runs", func(t *testing.T) {
		resp, out := postWasm(t, base+"/v1/transform/wasmtag", wasmInput(t, "hello.wasm"))
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out)
		assert.Equal(t, "wasmtag", resp.Header.Get(transform.HeaderPlugin))
		assert.Equal(t, "hello from a WASI module\n", runWASI(t, out))
	})

	t.Run("override", func(t *testing.T) {
		resp, out := postWasm(t, base+"/v1/transform?env=staging", wasmInput(t, "module.wasm"))
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out)
		assert.Equal(t, "wasmtag 1.1.0\nenv=staging\nteam=edge\n", compile(t, out)["soplug.wasmtag"])
	})

	module := wasmInput(t, "module.wasm")
	withCommand := func(cmd string) []byte {
		return wasm.AppendCustomSection(append([]byte{}, module...), "soplug.test", []byte(cmd))
	}
	cases := []struct {
		name, path string
		body       []byte
		code       int
		plugin     string
		msg        string
	}{
		{"malformed", "/v1/transform", []byte("(module (func))"), 400, "wasmtag", "not a WebAssembly binary"},
		{"not overridable", "/v1/transform?team=core", module, 400, "wasmtag", `configuration key "team" cannot be overridden`},
		{"oversized", "/v1/transform", make([]byte, 5<<20), 413, "wasmtag", "larger than the limit of 4194304 bytes"},
		{"rejected by wasmtag", "/v1/transform", wasmInput(t, "hello.wasm")[:4096], 422, "wasmtag", "wasm: malformed section"},
		{"rejected by wasmdigest", "/v1/transform/wasmdigest?algorithm=md5", module, 422, "wasmdigest", `unknown algorithm "md5"`},
		{"rejected by faulty", "/v1/transform/faulty", withCommand("reject"), 422, "faulty", "asked to refuse this input"},
		{"panicking", "/v1/transform/faulty", withCommand("panic"), 500, "faulty", "the plugin panicked: faulty: asked to panic"},
		{"slow", "/v1/transform/faulty", withCommand("sleep"), 504, "faulty", "did not finish within 500ms"},
		{"stuck", "/v1/transform/faulty", withCommand("hang"), 504, "faulty", "did not finish within 500ms"},
		{"unknown plugin", "/v1/transform/nosuch", module, 404, "", `no transformer named "nosuch"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := postWasm(t, base+tc.path, tc.body)
			require.Equal(t, tc.code, resp.StatusCode, "%s", out)
			var e transform.Error
			require.NoError(t, json.Unmarshal(out, &e), "%s", out)
			assert.Contains(t, e.Error, tc.msg)
			assert.Equal(t, tc.plugin, e.Plugin)
		})
	}

	resp, out := postWasm(t, base+"/v1/transform", module)
	require.Equal(t, http.StatusOK, resp.StatusCode, "serving after a panic: %s", out)

	metrics := get(t, base+"/metrics")
	for _, want := range []string{
		`soplug_transform_requests_total{code="200",plugin="wasmtag",version="1.1.0"} 9`,
		`soplug_transform_requests_total{code="200",plugin="wasmdigest",version="1.0.0"} 5`,
		`soplug_transform_errors_total{code="400",plugin="wasmtag",version="1.1.0"} 2`,
		`soplug_transform_errors_total{code="413",plugin="wasmtag",version="1.1.0"} 1`,
		`soplug_transform_errors_total{code="422",plugin="wasmtag",version="1.1.0"} 1`,
		`soplug_transform_errors_total{code="422",plugin="faulty",version="1.0.0"} 1`,
		`soplug_transform_errors_total{code="500",plugin="faulty",version="1.0.0"} 1`,
		`soplug_transform_errors_total{code="504",plugin="faulty",version="1.0.0"} 2`,
		`soplug_transform_errors_total{code="404",plugin="",version=""} 1`,
		`soplug_transform_panics_total{plugin="faulty",version="1.0.0"} 1`,
		`soplug_transform_duration_seconds_count{plugin="wasmtag",version="1.1.0"} 10`,
		`soplug_plugin_active{kind="transformer",plugin="wasmtag",version="1.1.0"} 1`,
		`soplug_plugin_active{kind="transformer",plugin="faulty",version="1.0.0"} 1`,
		`soplug_build_info{contract_abi="1",goversion="go`,
	} {
		assert.Contains(t, metrics, want)
	}
	assert.GreaterOrEqual(t, metricValue(t, metrics, `soplug_transform_abandoned_total{plugin="faulty",version="1.0.0"}`), 1.0,
		"the call that ignores its deadline (the one that honours it may be counted too: it was running when the deadline passed)")
	in := metricValue(t, metrics, `soplug_transform_received_bytes_total{plugin="wasmtag",version="1.1.0"}`)
	assert.Greater(t, in, float64(len(wasmInput(t, "hello.wasm"))*2), "bytes in count the two hello.wasm posts")
	assert.Greater(t, metricValue(t, metrics, `soplug_transform_sent_bytes_total{plugin="wasmtag",version="1.1.0"}`), float64(len(wasmInput(t, "hello.wasm"))*2))
}

// TestTransformConfigChange: a configuration that stops validating is
// logged and the daemon keeps serving the old one; the fix restarts it.
func TestTransformConfigChange(t *testing.T) {
	t.Parallel()
	d, addr, conf := transformRunner(t)
	require.NoError(t, os.WriteFile(conf, []byte(e2eConfig+"\n[plugins.wasmtgg.config]\nteam = \"x\"\n"), 0o644))
	d.waitLog(t, `the new set cannot start: still serving the current one.*unknown plugin \\"wasmtgg\\"`)
	assert.Contains(t, d.text(), conf+`:12: unknown plugin`)
	resp, _ := postWasm(t, "http://"+addr+"/v1/transform", wasmInput(t, "module.wasm"))
	assert.Equal(t, http.StatusOK, resp.StatusCode, "still serving")

	require.NoError(t, os.WriteFile(conf, []byte(strings.Replace(e2eConfig, `"prod"`, `"production"`, 1)), 0o644))
	assert.Equal(t, exitcode.Restart, d.exitCode(t), d.text())
	assert.Contains(t, d.text(), `change="changed `+conf+`"`)
}

// TestRunConfigErrors: a configuration that does not validate stops the
// runner at start with EX_CONFIG and the file and line.
func TestRunConfigErrors(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.1.0.so", "kindcount_v1.0.0.so")
	cases := []struct{ name, body, want string }{
		{"syntax", "chain = [\"wasmtag\"\n", `:1:19: toml: array is incomplete`},
		{"unknown plugin", "[plugins.nosuch.config]\na = \"b\"\n", `:1: unknown plugin "nosuch" (installed: kindcount, wasmtag)`},
		{"not a string", "[plugins.wasmtag.config]\nlevel = 3\n", `:2: plugins.wasmtag.config.level: the value must be a string, not an integer`},
		{"chained processor", "chain = [\"wasmtag\", \"kindcount\"]\n", `:1: the chain names kindcount, which is an oplog-processor, not a transformer`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "plugins.toml")
			require.NoError(t, os.WriteFile(conf, []byte(tc.body), 0o644))
			d := start(t, dir, "--config", conf)
			assert.Equal(t, exitcode.Config, d.exitCode(t), d.text())
			assert.Contains(t, d.text(), conf+tc.want)

			code, out, errOut := runner(t, "plugins", "check", "--plugins", dir, "--config", conf)
			assert.Equal(t, exitcode.Config, code)
			assert.Contains(t, out+errOut, conf+tc.want, "check names it too (in the table's errors once plugins were probed)")
		})
	}
}

// compile validates a core module with wazero and returns its custom
// sections.
func compile(t *testing.T, b []byte) map[string]string {
	t.Helper()
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter().WithCustomSections(true))
	defer r.Close(ctx)
	m, err := r.CompileModule(ctx, b)
	require.NoError(t, err, "wazero validates the module")
	out := map[string]string{}
	for _, s := range m.CustomSections() {
		out[s.Name()] = string(s.Data())
	}
	return out
}

// runWASI runs a WASI command module with wazero and returns its output.
func runWASI(t *testing.T, b []byte) string {
	t.Helper()
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	var out bytes.Buffer
	_, err := r.InstantiateWithConfig(ctx, b, wazero.NewModuleConfig().WithStdout(&out).WithStderr(&out))
	require.NoError(t, err)
	return out.String()
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// metricValue returns the value of the series line that starts with series.
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	require.NotNil(t, m, "no %s in:\n%s", series, text)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}
