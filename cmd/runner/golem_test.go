package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract/golem"
	"github.com/soplug/soplug/internal/golemtest"
	"github.com/soplug/soplug/internal/transform"
	"github.com/soplug/soplug/internal/wasm"
)

const golemConfig = e2eConfig + `
[plugins.golemmeta]
overridable = ["*"]   # Golem's installation owns every key
config = { env_key = "REGION" }

[plugins.golemexec]
overridable = ["*"]
golem_drop_extras = true   # a raw answer (Golem 1.1, 1.2) drops its file and env entry
`

// TestGolemEndToEnd calls a running runner exactly as Golem's component
// service calls a component transformer plugin: the multipart form with
// the metadata of both Golem generations and installation parameters, to
// the example golemmeta in process and out of process, the JSON answer
// decoded and the component validated (wazero for core modules, the
// section walk for components); then every refusal, whose status must be
// one Golem retries only when a retry can succeed.
func TestGolemEndToEnd(t *testing.T) {
	t.Parallel()
	dir := copyPlugins(t, "wasmtag_v1.1.0.so", "wasmdigest_v1.0.0.so", "golemmeta_v1.0.0.so", "faulty=faulty_v1.0.0.so")
	exe, err := os.ReadFile(filepath.Join("..", "..", "plugins-exec", "golemmeta_v1.0.0"))
	require.NoError(t, err, "run ./build_plugins.sh first")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "golemexec_v1.0.0"), exe, 0o755))
	conf := filepath.Join(t.TempDir(), "plugins.toml")
	require.NoError(t, os.WriteFile(conf, []byte(golemConfig), 0o644))
	d := start(t, dir, "--config", conf, "--max-body", "4194304", "--transform-timeout", "2s")
	addr := <-d.addr
	d.waitLog(t, `msg=ready status="serving faulty 1.0.0, golemexec 1.0.0, golemmeta 1.0.0, wasmdigest 1.0.0, wasmtag 1.1.0"`)
	base := "http://" + addr
	call := func(t *testing.T, path string, parts ...golemtest.Part) (*http.Response, []byte) {
		t.Helper()
		body, ct, err := golemtest.Form(parts...)
		require.NoError(t, err)
		resp, err := http.Post(base+path, ct, body)
		require.NoError(t, err)
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, out
	}

	for _, plugin := range []string{"golemmeta", "golemexec"} {
		for _, gen := range []struct{ name, metadata, id, region string }{
			{"current", golemtest.MetadataNow, "3c5a2e1f-0000-4000-8000-000000000001", "eu-1"},
			{"older", golemtest.MetadataOld, "3c5a2e1f-0000-4000-8000-000000000002", "us-2"},
		} {
			for _, input := range []string{"module.wasm", "component.wasm"} {
				t.Run(plugin+"/"+gen.name+"/"+input, func(t *testing.T) {
					in := wasmInput(t, input)
					resp, out := call(t, "/v1/transform/"+plugin, golemtest.Component(in), golemtest.Metadata(gen.metadata))
					require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out)
					var a golemtest.Answer
					require.NoError(t, json.Unmarshal(out, &a), "Golem decodes the answer: %s", out)
					require.Equal(t, in, a.Data[:len(in)], "the input's bytes come first")
					kind, err := wasm.Check(a.Data)
					require.NoError(t, err)
					var rec string
					if kind == wasm.Module {
						rec = compile(t, a.Data)["soplug.golem"]
					} else {
						b, ok := wasm.CustomSection(a.Data, "soplug.golem")
						require.True(t, ok)
						rec = string(b)
					}
					assert.Equal(t, "component=shop:cart\nid="+gen.id+"\nREGION="+gen.region+"\n", rec)
					assert.Equal(t, []golem.File{{Path: "/soplug/transformed-by", Permissions: golem.ReadOnly, Content: []byte("golemmeta 1.0.0\n")}}, a.AdditionalFiles)
					assert.Equal(t, map[string]string{"SOPLUG_TRANSFORMED_BY": "golemmeta 1.0.0"}, a.Env)
					assert.Equal(t, plugin, resp.Header.Get(transform.HeaderPlugin))
				})
			}
		}
	}

	// Each release's own request and reading of the answer, with a PEM key
	// as a parameter (golemmeta records the variable env_key names, so the
	// record holds the key's bytes): a raw answer for 1.1 and 1.2, where
	// golemexec's installation drops what it adds and golemmeta's refuses.
	pem := "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIC1iZTNmNzQ4\r\n-----END PRIVATE KEY-----\n"
	for _, plugin := range []string{"golemmeta", "golemexec"} {
		for _, rel := range golemtest.Releases {
			t.Run(plugin+"/golem-"+rel.Name, func(t *testing.T) {
				in := wasmInput(t, "component.wasm")
				req, err := rel.Request(t.Context(), base+"/v1/transform/"+plugin, in, []byte("wit"), map[string]string{"env_key": pem})
				require.NoError(t, err)
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				a, err := rel.Read(resp, in)
				if rel.Raw && plugin == "golemmeta" {
					require.Error(t, err)
					assert.Contains(t, err.Error(), "422 Unprocessable Entity")
					assert.Contains(t, err.Error(), "Golem 1.1 and 1.2")
					return
				}
				require.NoError(t, err)
				_, err = wasm.Check(a.Data)
				require.NoError(t, err, "Golem %s analyses what it read as a component", rel.Name)
				b, ok := wasm.CustomSection(a.Data, "soplug.golem")
				require.True(t, ok)
				assert.Equal(t, "component=shop:cart\nid="+rel.ComponentID()+"\n"+pem+"=\n", string(b), "the PEM key reached the plugin byte for byte")
			})
		}
	}

	t.Run("parameters set the configuration", func(t *testing.T) {
		resp, out := call(t, "/v1/transform/golemmeta", golemtest.Component(wasmInput(t, "module.wasm")),
			golemtest.Metadata(`{"componentId":"c","componentName":"n","files":[],"env":{"STAGE":"blue"}}`), golemtest.Param("env_key", "STAGE"))
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out)
		var a golemtest.Answer
		require.NoError(t, json.Unmarshal(out, &a))
		assert.Equal(t, "component=n\nid=c\nSTAGE=blue\n", compile(t, a.Data)["soplug.golem"])
	})

	t.Run("the chain", func(t *testing.T) {
		resp, out := call(t, "/v1/transform", golemtest.Component(wasmInput(t, "hello.wasm")), golemtest.Metadata(golemtest.MetadataNow), golemtest.Param("env", "staging"))
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out)
		var a golemtest.Answer
		require.NoError(t, json.Unmarshal(out, &a))
		assert.Equal(t, "wasmtag 1.1.0\nenv=staging\nteam=edge\n", compile(t, a.Data)["soplug.wasmtag"])
		assert.Equal(t, "hello from a WASI module\n", runWASI(t, a.Data), "the transformed program still runs")
	})

	module := wasmInput(t, "module.wasm")
	withCommand := func(cmd string) []byte {
		return wasm.AppendCustomSection(append([]byte{}, module...), "soplug.test", []byte(cmd))
	}
	meta := golemtest.Metadata(golemtest.MetadataNow)
	for _, tc := range []struct {
		name, path string
		parts      []golemtest.Part
		code       int
		msg        string
	}{
		{"no component", "/v1/transform/golemmeta", []golemtest.Part{meta}, 400, `no "component" part`},
		{"bad metadata", "/v1/transform/golemmeta", []golemtest.Part{golemtest.Component(module), golemtest.Metadata("{")}, 400, "not Golem's component JSON"},
		{"not WebAssembly", "/v1/transform/golemmeta", []golemtest.Part{golemtest.Component([]byte("(module)")), meta}, 400, "not a WebAssembly binary"},
		{"a parameter the installation keeps", "/v1/transform", []golemtest.Part{golemtest.Component(module), meta, golemtest.Param("team", "x")}, 400, `"team" cannot be overridden`},
		{"too large", "/v1/transform/golemmeta", []golemtest.Part{golemtest.Component(make([]byte, 5<<20)), meta}, 413, "larger than the limit"},
		{"refused", "/v1/transform/faulty", []golemtest.Part{golemtest.Component(withCommand("reject")), meta}, 422, "asked to refuse"},
		{"panicked", "/v1/transform/faulty", []golemtest.Part{golemtest.Component(withCommand("panic")), meta}, 422, "the plugin panicked"},
		{"no WebAssembly out", "/v1/transform/faulty", []golemtest.Part{golemtest.Component(withCommand("garbage")), meta}, 422, "no WebAssembly"},
		{"timeout", "/v1/transform/faulty", []golemtest.Part{golemtest.Component(withCommand("sleep")), meta}, 504, "did not finish within 2s"},
		{"no such plugin", "/v1/transform/nosuch", []golemtest.Part{golemtest.Component(module), meta}, 404, "no transformer named"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := call(t, tc.path, tc.parts...)
			require.Equal(t, tc.code, resp.StatusCode, "%s", out)
			var e transform.Error
			require.NoError(t, json.Unmarshal(out, &e), "%s", out)
			assert.Contains(t, e.Error, tc.msg)
			assert.Equal(t, tc.code >= 503, golemtest.Retried(tc.code), "Golem retries only what may succeed later")
		})
	}
	assert.Equal(t, 1, strings.Count(d.text(), "level=ERROR"), "the panic is the one error logged:\n%s", d.text())
}
