package transform_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/contract/golem"
	"github.com/soplug/soplug/internal/golemtest"
	"github.com/soplug/soplug/internal/inflight"
	"github.com/soplug/soplug/internal/pluginconf"
	"github.com/soplug/soplug/internal/transform"
	"github.com/soplug/soplug/internal/wasm"
)

// golemForm builds a form as Golem sends it (package golemtest).
func golemForm(t *testing.T, parts ...golemtest.Part) (*bytes.Buffer, string) {
	t.Helper()
	body, ct, err := golemtest.Form(parts...)
	require.NoError(t, err)
	return body, ct
}

type part = golemtest.Part

var (
	component = golemtest.Component
	metadata  = golemtest.Metadata
	param     = golemtest.Param
)

const (
	metadataNow = golemtest.MetadataNow
	metadataOld = golemtest.MetadataOld
)

func postForm(t *testing.T, url string, body io.Reader, contentType string) (*http.Response, []byte) {
	t.Helper()
	resp, err := client.Post(url, contentType, body)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, out
}

// golemPlugin records what a Golem request tells it in a custom section,
// and adds a file and an environment entry to the answer.
func golemPlugin(name string, overridable ...string) transform.Plugin {
	return transform.Plugin{Name: name, Version: "1.0.0", Transformer: tagger{name: name, fn: func(ctx context.Context, b []byte, cfg contract.Config) ([]byte, error) {
		req, ok := golem.FromContext(ctx)
		if !ok {
			return wasm.AppendCustomSection(b, name, []byte("no golem")), nil
		}
		m := req.Metadata
		if err := req.AddFile(golem.File{Path: "/soplug/" + name + ".txt", Permissions: golem.ReadOnly, Content: []byte(m.ComponentName)}); err != nil {
			return nil, err
		}
		req.SetEnv("TAGGED_BY", name)
		rec := fmt.Sprintf("id=%s name=%s region=%s team=%s env=%s files=%d", m.ComponentID, m.ComponentName, m.Env["REGION"], cfg["team"], cfg["env"], len(m.Files))
		return wasm.AppendCustomSection(b, name, []byte(rec)), nil
	}}, Installation: pluginconf.Installation{Config: contract.Config{"team": "edge", "env": "prod"}, Overridable: overridable}}
}

// TestGolemProtocol calls the service as Golem's component service does,
// with the metadata of both generations and installation parameters, and
// decodes the answer as Golem does.
func TestGolemProtocol(t *testing.T) {
	srv, _, _ := serve(t, transform.Config{}, golemPlugin("tag", "env"))
	for _, tc := range []struct {
		name, metadata, id, region string
		files                      int
	}{
		{"current Golem", metadataNow, "3c5a2e1f-0000-4000-8000-000000000001", "eu-1", 1},
		{"older Golem", metadataOld, "3c5a2e1f-0000-4000-8000-000000000002", "us-2", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, ct := golemForm(t, component(module), metadata(tc.metadata), param("env", "staging"))
			resp, out := postForm(t, srv.URL+"/v1/transform/tag", body, ct)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			assert.Equal(t, "tag", resp.Header.Get(transform.HeaderPlugin))
			var a golemtest.Answer
			require.NoError(t, json.Unmarshal(out, &a), "%s", out)
			data := a.Data
			_, err := wasm.Check(data)
			require.NoError(t, err)
			rec, ok := wasm.CustomSection(data, "tag")
			require.True(t, ok)
			assert.Equal(t, fmt.Sprintf("id=%s name=shop:cart region=%s team=edge env=staging files=%d", tc.id, tc.region, tc.files), string(rec))
			assert.Equal(t, []golem.File{{Path: "/soplug/tag.txt", Permissions: golem.ReadOnly, Content: []byte("shop:cart")}}, a.AdditionalFiles)
			assert.Equal(t, map[string]string{"TAGGED_BY": "tag"}, a.Env)
		})
	}

	// The raw path carries no Golem request.
	resp, out := post(t, srv.URL+"/v1/transform/tag", bytes.NewReader(module))
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out)
	rec, _ := wasm.CustomSection(out, "tag")
	assert.Equal(t, "no golem", string(rec))
}

// TestGolemOwnsEveryKey: overridable = ["*"] lets Golem's installation
// set every key; without it a parameter must be listed.
func TestGolemOwnsEveryKey(t *testing.T) {
	srv, _, _ := serve(t, transform.Config{}, golemPlugin("owned", pluginconf.AnyKey), golemPlugin("listed", "env"))
	body, ct := golemForm(t, component(module), metadata(metadataNow), param("team", "golem"), param("env", "dev"))
	resp, out := postForm(t, srv.URL+"/v1/transform/owned", body, ct)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out)
	var a golemtest.Answer
	require.NoError(t, json.Unmarshal(out, &a))
	rec, _ := wasm.CustomSection(a.Data, "owned")
	assert.Contains(t, string(rec), "team=golem env=dev")

	body, ct = golemForm(t, component(module), metadata(metadataNow), param("team", "golem"))
	resp, out = postForm(t, srv.URL+"/v1/transform/listed", body, ct)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Contains(t, string(out), `parameter: configuration key \"team\" cannot be overridden by a request (overridable: env)`)
}

// TestGolemErrors: every refusal of the Golem path, its status, its JSON,
// and whether Golem would retry it.
func TestGolemErrors(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	fail := func(fn func(context.Context, []byte, contract.Config) ([]byte, error)) func(context.Context, []byte, contract.Config) ([]byte, error) {
		return fn
	}
	plugins := []transform.Plugin{
		golemPlugin("tag", "env"),
		plugin("refuse", fail(func(context.Context, []byte, contract.Config) ([]byte, error) {
			return nil, errors.New("unsupported import")
		})),
		plugin("boom", fail(func(context.Context, []byte, contract.Config) ([]byte, error) { panic("nil map") })),
		plugin("garbage", fail(func(context.Context, []byte, contract.Config) ([]byte, error) { return []byte("text"), nil })),
		plugin("slow", fail(func(ctx context.Context, _ []byte, _ contract.Config) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})),
		plugin("badfile", fail(func(ctx context.Context, b []byte, _ contract.Config) ([]byte, error) {
			req, _ := golem.FromContext(ctx)
			return b, req.AddFile(golem.File{Path: "../etc/passwd", Permissions: golem.ReadOnly})
		})),
		{Name: "down", Installation: pluginconf.Installation{}},
	}
	srv, svc, _ := serve(t, transform.Config{MaxBytes: 64 << 10, Timeout: 200 * time.Millisecond}, plugins...)
	form := func(parts ...part) func() (io.Reader, string) {
		return func() (io.Reader, string) { return golemForm(t, parts...) }
	}
	ok := []part{component(module), metadata(metadataNow)}
	with := func(extra ...part) func() (io.Reader, string) {
		return form(append(append([]part{}, ok...), extra...)...)
	}
	cases := []struct {
		name, plugin string
		body         func() (io.Reader, string)
		code         int
		msg          string
	}{
		{"no component", "tag", form(metadata(metadataNow)), 400, `the form has no "component" part`},
		{"component twice", "tag", form(component(module), component(module)), 400, `form part "component" is given twice`},
		{"bad metadata", "tag", form(component(module), metadata(`{"componentName":`)), 400, `form part "metadata": golem: the metadata is not Golem's component JSON`},
		{"metadata of the wrong type", "tag", form(component(module), metadata(`{"componentName":7}`)), 400, `form part "metadata"`},
		{"unnamed part", "tag", form(component(module), part{Name: "", Value: []byte("x")}), 400, "a form part without a name"},
		{"parameter not listed", "tag", with(param("a b", "x")), 400, `parameter: configuration key "a b" cannot be overridden by a request (overridable: env)`},
		{"parameter as a file", "tag", with(part{Name: "env", FileName: "env.txt", Value: []byte("x")}), 400, `parameter "env" is a file`},
		{"parameter not overridable", "tag", with(param("team", "x")), 400, `configuration key "team" cannot be overridden`},
		{"parameter not UTF-8", "tag", with(param("env", "\xff")), 400, `parameter "env": the key or value is not UTF-8`},
		{"two boundaries", "tag", func() (io.Reader, string) {
			b, ct := golemForm(t, ok...)
			return b, ct + "; boundary=other"
		}, 400, `mime: duplicate parameter name`},
		{"a bad answer", "tag?soplug.answer=xml", form(ok...), 400, `soplug.answer="xml": want raw (Golem 1.1, 1.2) or json (1.3, 1.4)`},
		{"parameter too long", "tag", with(param("env", strings.Repeat("x", transform.MaxParameterBytes+1))), 400, `parameter "env": larger than its limit: 65536 bytes`},
		{"not WebAssembly", "tag", form(component([]byte("(module)")), metadata(metadataNow)), 400, "not a WebAssembly binary"},
		{"component too large", "tag", form(component(wasmOfSize(64<<10+1)), metadata(metadataNow)), 413, "larger than the limit of 65536 bytes"},
		{"no boundary", "tag", func() (io.Reader, string) { return strings.NewReader("x"), "multipart/form-data" }, 400, "not a multipart form"},
		{"cut short", "tag", func() (io.Reader, string) {
			b, ct := golemForm(t, ok...)
			return bytes.NewReader(b.Bytes()[:b.Len()-20]), ct
		}, 400, "a malformed multipart form"},
		{"refused", "refuse", form(ok...), 422, "unsupported import"},
		{"panicked", "boom", form(ok...), 422, "the plugin panicked: nil map"},
		{"no WebAssembly out", "garbage", form(ok...), 422, "the plugin returned no WebAssembly binary"},
		{"a bad file path", "badfile", form(ok...), 422, `golem: file path "../etc/passwd"`},
		{"timeout", "slow", form(ok...), 504, "did not finish within 200ms"},
		{"no version", "down", form(ok...), 503, "plugin down has no acceptable version"},
		{"no such plugin", "nosuch", form(ok...), 404, `no transformer named "nosuch"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, ct := tc.body()
			resp, out := postForm(t, srv.URL+"/v1/transform/"+tc.plugin, body, ct)
			require.Equal(t, tc.code, resp.StatusCode, "%s", out)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var e transform.Error
			require.NoError(t, json.Unmarshal(out, &e), "%s", out)
			assert.Contains(t, e.Error, tc.msg)
			// Golem retries 5xx: only what may succeed later is one.
			assert.Equal(t, tc.code == 503 || tc.code == 504, golemtest.Retried(tc.code), "Golem would retry %d", tc.code)
		})
	}
	svc.Drain()
	body, ct := golemForm(t, ok...)
	resp, out := postForm(t, srv.URL+"/v1/transform/tag", body, ct)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s", out)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
}

// TestGolemBudget: a form the budget cannot hold gets 503 with
// Retry-After, announced or chunked; one past --max-body and the form's
// allowance gets 413 before the budget is asked; the budget is whole
// again after each.
func TestGolemBudget(t *testing.T) {
	budget := inflight.New(256 << 10)
	srv, _, _ := serve(t, transform.Config{Budget: budget, MaxBytes: 8 << 20}, golemPlugin("tag", "env"))
	for _, tc := range []struct {
		name    string
		chunked bool
		size    int
		code    int
	}{
		{"fits", false, 64 << 10, http.StatusOK},
		{"announced over the budget", false, 512 << 10, http.StatusServiceUnavailable},
		{"chunked over the budget", true, 512 << 10, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, ct := golemForm(t, component(wasmOfSize(tc.size)), metadata(metadataNow))
			var r io.Reader = body
			if tc.chunked {
				r = onlyReader{body}
			}
			resp, out := postForm(t, srv.URL+"/v1/transform/tag", r, ct)
			assert.Equal(t, tc.code, resp.StatusCode, "%s", out)
			if tc.code == http.StatusServiceUnavailable {
				assert.Equal(t, "1", resp.Header.Get("Retry-After"))
				assert.Contains(t, string(out), "budget for request bodies in flight is exhausted")
			}
			assert.Eventually(t, func() bool { return budget.InUse() == 0 }, 5*time.Second, 5*time.Millisecond)
		})
	}
	// Past the component limit and the form's allowance: 413, not 503.
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/transform/tag HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: %d\r\n\r\n", 1<<30)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
}

// pem is a parameter value as a PEM key is: lines, a trailing newline.
const pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIC1iZTNmNzQ4\r\nYWI=\t\n-----END PRIVATE KEY-----\n"

// echoPlugin writes what its call saw, as JSON, into a custom section: the
// configuration and, from Golem, the component's ID and environment.
func echoPlugin(name string, drop bool) transform.Plugin {
	return transform.Plugin{Name: name, Version: "1.0.0", Transformer: tagger{name: name, fn: func(ctx context.Context, b []byte, cfg contract.Config) ([]byte, error) {
		seen := map[string]any{"config": cfg}
		if req, ok := golem.FromContext(ctx); ok {
			seen["id"], seen["env"] = req.Metadata.ComponentID, req.Metadata.Env
		}
		rec, err := json.Marshal(seen)
		if err != nil {
			return nil, err
		}
		return wasm.AppendCustomSection(b, name, rec), nil
	}}, Installation: pluginconf.Installation{Config: contract.Config{"team": "edge"}, Overridable: []string{pluginconf.AnyKey}, GolemDropExtras: drop}}
}

// TestGolemReleases calls the service as each release that calls
// transformers does (golemtest.Releases: its metadata, reqwest's form and
// headers, parameters with a PEM key and names reqwest escapes) and reads
// the answer as that release does: every one gets a valid component that
// the plugin made from what was sent, byte for byte.
func TestGolemReleases(t *testing.T) {
	srv, _, _ := serve(t, transform.Config{}, echoPlugin("echo", false))
	params := map[string]string{
		"key":        pem,
		"my key":     "spaces in the name",
		"clé":        "non-ASCII name",
		"a=b;c":      `"quoted"`,
		"multi.line": "first\nsecond\n\nfourth",
		"empty":      "",
	}
	wit := bytes.Repeat([]byte("wit!"), 1000)
	for _, rel := range golemtest.Releases {
		t.Run(rel.Name, func(t *testing.T) {
			req, err := rel.Request(t.Context(), srv.URL+"/v1/transform/echo", module, wit, params)
			require.NoError(t, err)
			resp, err := client.Do(req)
			require.NoError(t, err)
			wantType := map[bool]string{true: "application/wasm", false: "application/json"}[rel.Raw]
			assert.Equal(t, wantType, resp.Header.Get("Content-Type"))
			a, err := rel.Read(resp, module)
			require.NoError(t, err)
			_, err = wasm.Check(a.Data)
			require.NoError(t, err, "Golem %s analyses the answer as a component", rel.Name)
			rec, ok := wasm.CustomSection(a.Data, "echo")
			require.True(t, ok)
			var seen struct {
				Config map[string]string `json:"config"`
				ID     string            `json:"id"`
			}
			require.NoError(t, json.Unmarshal(rec, &seen))
			want := map[string]string{"team": "edge"}
			maps.Copy(want, params)
			assert.Equal(t, want, seen.Config, "every parameter reaches the plugin under its name, its value byte for byte")
			assert.Equal(t, rel.ComponentID(), seen.ID)
		})
	}
}

// TestGolemRawAnswer: what a raw answer cannot carry is refused, naming
// the release and the way out, unless the installation drops it; the
// query's soplug.answer overrides the metadata's guess either way.
func TestGolemRawAnswer(t *testing.T) {
	adds := golemPlugin("adds", "env")
	drops := golemPlugin("drops", "env")
	drops.Installation.GolemDropExtras = true
	srv, _, _ := serve(t, transform.Config{}, adds, drops)
	v12, v14 := golemtest.Releases[1], golemtest.Releases[3]
	call := func(t *testing.T, rel golemtest.Release, path string) (golemtest.Answer, error) {
		req, err := rel.Request(t.Context(), srv.URL+path, module, nil, nil)
		require.NoError(t, err)
		resp, err := client.Do(req)
		require.NoError(t, err)
		return rel.Read(resp, module)
	}
	_, err := call(t, v12, "/v1/transform/adds")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "422")
	assert.Contains(t, err.Error(), `the plugins added files (1) and environment entries (1), which a raw answer cannot carry: Golem 1.1 and 1.2 (metadata without \"env\") take the component alone; set golem_drop_extras = true in the installation of adds to drop them, or register the URL with ?soplug.answer=json`)

	a, err := call(t, v12, "/v1/transform/drops")
	require.NoError(t, err)
	rec, ok := wasm.CustomSection(a.Data, "drops")
	require.True(t, ok, "the raw answer is the component")
	assert.Contains(t, string(rec), "id=3c5a2e1f-0000-4000-8000-000000000012")

	// A 1.2 caller told to read JSON, as a 1.3 one would.
	asJSON := v12
	asJSON.Raw = false
	a, err = call(t, asJSON, "/v1/transform/adds?soplug.answer=json")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"TAGGED_BY": "adds"}, a.Env)
	// A 1.4 caller answered raw.
	asRaw := v14
	asRaw.Raw = true
	a, err = call(t, asRaw, "/v1/transform/drops?soplug.answer=raw")
	require.NoError(t, err)
	_, err = wasm.Check(a.Data)
	assert.NoError(t, err)
}

// TestGolemLargeMetadata: the metadata is bounded by the body limit, not
// by a limit of its own: 1.2's metadata with a 3 MiB binaryWit (4 MiB of
// base64) passes; past --max-body it is a 400 naming the limit.
func TestGolemLargeMetadata(t *testing.T) {
	wit := bytes.Repeat([]byte{0, 'a', 's', 'm', 0xff}, 3<<20/5)
	big, _, _ := serve(t, transform.Config{}, echoPlugin("echo", false))
	small, _, _ := serve(t, transform.Config{MaxBytes: 1 << 20}, echoPlugin("echo", false))
	rel := golemtest.Releases[1]
	for _, tc := range []struct {
		name string
		url  string
		want string
	}{
		{"within the default limit", big.URL, ""},
		{"past --max-body", small.URL, `form part \"metadata\": larger than its limit: 1048576 bytes (--max-body)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := rel.Request(t.Context(), tc.url+"/v1/transform/echo", module, wit, nil)
			require.NoError(t, err)
			require.Greater(t, req.ContentLength, int64(4<<20))
			resp, err := client.Do(req)
			require.NoError(t, err)
			a, err := rel.Read(resp, module)
			if tc.want != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.want)
				return
			}
			require.NoError(t, err)
			_, err = wasm.Check(a.Data)
			assert.NoError(t, err)
		})
	}
}

// TestGolemAnswerEncoding: the base64 answer is the component, byte for
// byte, at every size around the encoder's chunks (48 KiB, 768 KiB) and
// its padding, with the pooled buffer and, when the budget cannot hold
// that, with the small one; the budget is whole again after each.
func TestGolemAnswerEncoding(t *testing.T) {
	identity := plugin("same", func(_ context.Context, b []byte, _ contract.Config) ([]byte, error) { return b, nil })
	for _, budget := range []struct {
		name  string
		limit int64
	}{{"ample budget", 64 << 20}, {"budget for the body only", 2<<20 + 256<<10}} {
		b := inflight.New(budget.limit)
		srv, _, _ := serve(t, transform.Config{Budget: b, MaxBytes: 4 << 20}, identity)
		for _, size := range []int{8, 9, 10, 48<<10 - 1, 48 << 10, 48<<10 + 1, 768<<10 - 1, 768 << 10, 768<<10 + 1, 2<<20 + 2} {
			t.Run(fmt.Sprintf("%s/%d", budget.name, size), func(t *testing.T) {
				in := wasmOfSize(size)
				for i := 8; i < size; i++ {
					in[i] = byte(i * 7)
				}
				body, ct := golemForm(t, component(in), metadata(metadataNow))
				resp, out := postForm(t, srv.URL+"/v1/transform/same", body, ct)
				require.Equal(t, http.StatusOK, resp.StatusCode, "%s", out)
				assert.Equal(t, strconv.Itoa(len(out)), resp.Header.Get("Content-Length"))
				var a golemtest.Answer
				require.NoError(t, json.Unmarshal(out, &a))
				assert.True(t, bytes.Equal(in, a.Data), "the answer decodes to the component")
				assert.Eventually(t, func() bool { return b.InUse() == 0 }, 5*time.Second, 5*time.Millisecond)
			})
		}
	}
}
