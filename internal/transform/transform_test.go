package transform_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/pluginconf"
	"github.com/soplug/soplug/internal/transform"
	"github.com/soplug/soplug/internal/wasm"
)

// tagger appends a custom section named after itself holding its config.
type tagger struct {
	name string
	fn   func(ctx context.Context, b []byte, cfg contract.Config) ([]byte, error)
}

func (tagger) Version() string    { return "1.0.0" }
func (tagger) IsAcceptable() bool { return true }
func (t tagger) Transform(ctx context.Context, b []byte, cfg contract.Config) ([]byte, error) {
	if t.fn != nil {
		return t.fn(ctx, b, cfg)
	}
	var rec strings.Builder
	for _, k := range []string{"env", "team"} {
		rec.WriteString(k + "=" + cfg[k] + ";")
	}
	return wasm.AppendCustomSection(b, t.name, []byte(rec.String())), nil
}

var module = []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00")

func plugin(name string, fn func(context.Context, []byte, contract.Config) ([]byte, error)) transform.Plugin {
	return transform.Plugin{Name: name, Version: "1.0.0", Transformer: tagger{name: name, fn: fn},
		Installation: pluginconf.Installation{Config: contract.Config{"team": "edge", "env": "prod"}, Overridable: []string{"env"}}}
}

// serve starts a server for a Service of plugins under cfg.
func serve(t *testing.T, cfg transform.Config, plugins ...transform.Plugin) (*httptest.Server, *transform.Service, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	s, err := transform.New(cfg, plugins)
	require.NoError(t, err)
	mux := http.NewServeMux()
	s.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, s, reg
}

func post(t *testing.T, url string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/wasm", body)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, out
}

func TestTransform(t *testing.T) {
	srv, _, reg := serve(t, transform.Config{}, plugin("tag", nil))
	resp, out := post(t, srv.URL+"/v1/transform", bytes.NewReader(module))
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, "application/wasm", resp.Header.Get("Content-Type"))
	assert.Equal(t, "tag", resp.Header.Get(transform.HeaderPlugin))
	assert.Equal(t, "1.0.0", resp.Header.Get(transform.HeaderVersion))
	assert.Equal(t, module, out[:len(module)])
	got, ok := wasm.CustomSection(out, "tag")
	require.True(t, ok)
	assert.Equal(t, "env=prod;team=edge;", string(got))

	resp, out = post(t, srv.URL+"/v1/transform/tag?env=staging", bytes.NewReader(module))
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	got, _ = wasm.CustomSection(out, "tag")
	assert.Equal(t, "env=staging;team=edge;", string(got), "an overridable key set by the request")

	assert.Equal(t, 2.0, value(t, reg, "soplug_transform_requests_total", "plugin=tag", "version=1.0.0", "code=200"))
	assert.Equal(t, 2.0, sampleCount(t, reg, "soplug_transform_duration_seconds"))
}

// TestChain: two transformers in the configured order, each with its own
// configuration.
func TestChain(t *testing.T) {
	srv, _, _ := serve(t, transform.Config{Chain: []string{"second", "first"}}, plugin("first", nil), plugin("second", nil))
	resp, out := post(t, srv.URL+"/v1/transform", bytes.NewReader(module))
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, "second, first", resp.Header.Get(transform.HeaderPlugin))
	assert.Equal(t, "1.0.0, 1.0.0", resp.Header.Get(transform.HeaderVersion))
	i, j := bytes.Index(out, []byte("second")), bytes.Index(out, []byte("first"))
	assert.True(t, i > 0 && j > i, "second's section comes before first's")

	resp, out = post(t, srv.URL+"/v1/transform/first", bytes.NewReader(module))
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, "first", resp.Header.Get(transform.HeaderPlugin))

	_, err := transform.New(transform.Config{Chain: []string{"nosuch"}}, []transform.Plugin{plugin("first", nil)})
	assert.ErrorContains(t, err, `the chain names "nosuch"`)
}

// TestErrors: every error status, its JSON body and its count.
func TestErrors(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	plugins := []transform.Plugin{
		plugin("tag", nil),
		plugin("refuse", func(context.Context, []byte, contract.Config) ([]byte, error) {
			return nil, errors.New("this component imports nothing I know")
		}),
		plugin("boom", func(context.Context, []byte, contract.Config) ([]byte, error) { panic("index out of range") }),
		plugin("slow", func(ctx context.Context, _ []byte, _ contract.Config) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}),
		plugin("stuck", func(context.Context, []byte, contract.Config) ([]byte, error) { <-hang; return module, nil }),
		plugin("garbage", func(context.Context, []byte, contract.Config) ([]byte, error) { return []byte("text"), nil }),
		{Name: "down", Installation: pluginconf.Installation{}},
	}
	srv, svc, reg := serve(t, transform.Config{MaxBytes: 1 << 10, Timeout: 200 * time.Millisecond}, plugins...)
	cases := []struct {
		name, path string
		body       io.Reader
		code       int
		plugin     string
		msg        string
	}{
		{"not wasm", "/v1/transform/tag", strings.NewReader("(module)"), 400, "tag", "not a WebAssembly binary"},
		{"empty body", "/v1/transform/tag", strings.NewReader(""), 400, "tag", "no \\0asm magic"},
		{"other version", "/v1/transform/tag", strings.NewReader("\x00asm\x02\x00\x00\x00"), 400, "tag", "unknown version/layer"},
		{"fixed override", "/v1/transform/tag?team=core", bytes.NewReader(module), 400, "tag", `key "team" cannot be overridden by a request (overridable: env)`},
		{"override twice", "/v1/transform/tag?env=a&env=b", bytes.NewReader(module), 400, "tag", `override "env" is given 2 times`},
		{"control in key", "/v1/transform/tag?e%01nv=staging", bytes.NewReader(module), 400, "tag", `override "e\x01nv": a control character (U+0001) in the key`},
		{"newline in key", "/v1/transform/tag?e%0Anv=staging", bytes.NewReader(module), 400, "tag", `override "e\nnv": a control character (U+000A) in the key`},
		{"semicolon", "/v1/transform/tag?env=staging;x", bytes.NewReader(module), 400, "tag", `override "env": a ';' in the query string`},
		{"bad escape", "/v1/transform/tag?env=%ZZ", bytes.NewReader(module), 400, "tag", `override "env": the value is not URL-encoded`},
		{"bad escape in key", "/v1/transform/tag?e%Gnv=1", bytes.NewReader(module), 400, "tag", `override "e%Gnv": the key is not URL-encoded`},
		{"not utf-8", "/v1/transform/tag?env=%FF", bytes.NewReader(module), 400, "tag", `override "env": the key or value is not UTF-8`},
		{"no such plugin", "/v1/transform/nosuch", bytes.NewReader(module), 404, "", `no transformer named "nosuch"`},
		{"no default", "/v1/transform", bytes.NewReader(module), 404, "", "several transformers are installed"},
		{"too large", "/v1/transform/tag", bytes.NewReader(make([]byte, 2<<10)), 413, "tag", "larger than the limit of 1024 bytes"},
		{"too large, chunked", "/v1/transform/tag", io.MultiReader(bytes.NewReader(module), strings.NewReader(strings.Repeat("x", 2<<10))), 413, "tag", "larger than the limit"},
		{"refused", "/v1/transform/refuse", bytes.NewReader(module), 422, "refuse", "this component imports nothing I know"},
		{"panic", "/v1/transform/boom", bytes.NewReader(module), 500, "boom", "the plugin panicked: index out of range"},
		{"not wasm out", "/v1/transform/garbage", bytes.NewReader(module), 500, "garbage", "the plugin returned no WebAssembly binary"},
		{"no version", "/v1/transform/down", bytes.NewReader(module), 503, "down", "plugin down has no acceptable version"},
		{"slow", "/v1/transform/slow", bytes.NewReader(module), 504, "slow", "did not finish within 200ms"},
		{"stuck", "/v1/transform/stuck", bytes.NewReader(module), 504, "stuck", "did not finish within 200ms"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := post(t, srv.URL+tc.path, tc.body)
			require.Equal(t, tc.code, resp.StatusCode, string(out))
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var e transform.Error
			require.NoError(t, json.Unmarshal(out, &e), string(out))
			assert.Contains(t, e.Error, tc.msg)
			assert.Equal(t, tc.plugin, e.Plugin)
			if tc.plugin != "" && tc.plugin != "down" {
				assert.Equal(t, "1.0.0", e.Version)
			}
		})
	}
	assert.Equal(t, 1.0, value(t, reg, "soplug_transform_panics_total", "plugin=boom", "version=1.0.0"))
	assert.Equal(t, 1.0, value(t, reg, "soplug_transform_abandoned_total", "plugin=stuck", "version=1.0.0"))
	assert.Equal(t, 2.0, value(t, reg, "soplug_transform_errors_total", "plugin=tag", "version=1.0.0", "code=413"))
	assert.Equal(t, 11.0, value(t, reg, "soplug_transform_errors_total", "plugin=tag", "version=1.0.0", "code=400"))
	for _, name := range []string{"soplug_transform_panics_total", "soplug_transform_abandoned_total"} {
		assert.Equal(t, 0.0, value(t, reg, name, "plugin=tag", "version=1.0.0"), "%s is there before its first event", name)
	}

	resp, out := post(t, srv.URL+"/v1/transform/tag", bytes.NewReader(module))
	assert.Equal(t, http.StatusOK, resp.StatusCode, "still serving after a panic: %s", out)

	svc.Drain()
	resp, out = post(t, srv.URL+"/v1/transform/tag", bytes.NewReader(module))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	assert.Contains(t, string(out), "draining for a restart")
}

// TestChainFailure: the error names the plugin of the chain that failed,
// and the ones before it are counted as done.
func TestChainFailure(t *testing.T) {
	refuse := func(context.Context, []byte, contract.Config) ([]byte, error) { return nil, errors.New("no") }
	srv, _, reg := serve(t, transform.Config{Chain: []string{"tag", "refuse"}}, plugin("tag", nil), plugin("refuse", refuse))
	resp, out := post(t, srv.URL+"/v1/transform", bytes.NewReader(module))
	require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
	assert.Contains(t, string(out), `"plugin":"refuse"`)
	assert.Equal(t, 1.0, value(t, reg, "soplug_transform_requests_total", "plugin=tag", "version=1.0.0", "code=200"))
	assert.Equal(t, 1.0, value(t, reg, "soplug_transform_requests_total", "plugin=refuse", "version=1.0.0", "code=422"))
}

// TestNoCopy: a plugin that appends within the slack gets the request's
// own buffer and returns it; nothing is copied between read and write.
func TestNoCopy(t *testing.T) {
	var capIn int
	grow := func(_ context.Context, b []byte, _ contract.Config) ([]byte, error) {
		capIn = cap(b)
		out := wasm.AppendCustomSection(b, "x", make([]byte, 100))
		if &out[0] != &b[0] {
			return nil, errors.New("the append copied")
		}
		return out, nil
	}
	srv, _, _ := serve(t, transform.Config{}, plugin("grow", grow))
	big := wasm.AppendCustomSection(append([]byte{}, module...), "pad", make([]byte, 1<<20))
	resp, out := post(t, srv.URL+"/v1/transform", bytes.NewReader(big))
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, len(big)+transform.Slack, capIn, "the buffer is the body's size plus the slack")
}

// value returns the value of the counter or gauge name with the labels lv
// ("plugin=tag", ...), failing t when there is none.
func value(t *testing.T, reg *prometheus.Registry, name string, lv ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetName()+"="+l.GetValue())
			}
			if !slices.Equal(slices.Sorted(slices.Values(lv)), slices.Sorted(slices.Values(got))) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s%v in the registry", name, lv)
	return 0
}

func sampleCount(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return n
}
