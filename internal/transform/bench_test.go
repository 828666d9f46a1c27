package transform_test

import (
	"bytes"
	"context"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/fixtures"
	"github.com/soplug/soplug/internal/golemtest"
	"github.com/soplug/soplug/internal/pluginconf"
	"github.com/soplug/soplug/internal/quarantine"
	"github.com/soplug/soplug/internal/transform"
	"github.com/soplug/soplug/internal/wasm"
	"github.com/soplug/soplug/loader"
	"github.com/soplug/soplug/loader/probe"
)

// TestMain lets the test binary be the loader's probe child.
func TestMain(m *testing.M) {
	if code, ok := probe.Dispatch(os.Args); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// benchConfig is the installation both backends get.
var benchConfig = contract.Config{"team": "edge", "env": "prod"}

// staticTag is wasmtag 1.1.0's Transform compiled into the benchmark: what
// a team would write without soplug.
func staticTag(component []byte, cfg contract.Config) ([]byte, error) {
	if _, err := wasm.Check(component); err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("wasmtag 1.1.0\n")
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		b.WriteString(k + "=" + cfg[k] + "\n")
	}
	return wasm.AppendCustomSection(component, "soplug.wasmtag", []byte(b.String())), nil
}

// plainHandler is the same transform in a plain net/http handler that
// reads the body as the service does: into a buffer sized from
// Content-Length, with room for the appended section. It is the baseline:
// the difference is the plugin call and the service's checks and metrics.
func plainHandler(w http.ResponseWriter, r *http.Request) {
	body := make([]byte, r.ContentLength, r.ContentLength+transform.Slack)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	tagAndWrite(w, body)
}

// readAllHandler is the handler most would write first: io.ReadAll, which
// grows its buffer by copying, and an append that copies once more.
func readAllHandler(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	tagAndWrite(w, body)
}

func tagAndWrite(w http.ResponseWriter, body []byte) {
	out, err := staticTag(body, benchConfig)
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return
	}
	w.Header().Set("Content-Type", "application/wasm")
	_, _ = w.Write(out)
}

// loadWasmtag loads the built example plugin wasmtag 1.1.0 with the loader,
// as the daemon does.
func loadWasmtag(b *testing.B) contract.Transformer {
	b.Helper()
	src := filepath.Join(fixtures.Root(), "plugins", "wasmtag_v1.1.0.so")
	data, err := os.ReadFile(src)
	require.NoError(b, err, "run ./build_plugins.sh first")
	dir := b.TempDir()
	require.NoError(b, os.WriteFile(filepath.Join(dir, "wasmtag_v1.1.0.so"), data, 0o755))
	sel, err := loader.New(loader.Config{Dir: dir}).Load(context.Background())
	require.NoError(b, err)
	return sel.Selected()[0].Plugin.(contract.Transformer)
}

// component1MiB is the test component padded with a custom section to
// exactly 1 MiB.
func component1MiB(b *testing.B) []byte {
	b.Helper()
	c, err := os.ReadFile(filepath.Join(fixtures.Root(), "testdata", "wasm", "component.wasm"))
	require.NoError(b, err)
	pad := 1<<20 - len(c) - 1 - 3 - 1 - len("pad") // id, 3-byte size, name length, name
	out := wasm.AppendCustomSection(c, "pad", make([]byte, pad))
	require.Len(b, out, 1<<20)
	return out
}

var (
	pluginOnce sync.Once
	pluginTr   contract.Transformer
)

// BenchmarkTransform1MiB posts a 1 MiB component over loopback HTTP, from
// GOMAXPROCS parallel clients, to the transform service running wasmtag
// 1.1.0 from its .so (as a raw body, and as Golem's multipart form, whose
// answer is JSON with the component in base64), and to plain net/http
// handlers running the same transform compiled in. It reports requests per
// second and the 99th percentile latency.
func BenchmarkTransform1MiB(b *testing.B) {
	pluginOnce.Do(func() { pluginTr = loadWasmtag(b) })
	svc, err := transform.New(transform.Config{}, []transform.Plugin{{Name: "wasmtag", Version: "1.1.0", Transformer: pluginTr,
		Installation: pluginconf.Installation{Config: benchConfig}}})
	require.NoError(b, err)
	mux := http.NewServeMux()
	svc.Register(mux)
	body := component1MiB(b)
	form, formType, err := golemtest.Form(golemtest.Component(body), golemtest.Metadata(golemtest.MetadataNow))
	require.NoError(b, err)
	for _, backend := range []struct {
		name     string
		h        http.Handler
		body     []byte
		bodyType string
	}{
		{"plain", http.HandlerFunc(plainHandler), body, "application/wasm"},
		{"plugin", mux, body, "application/wasm"},
		{"golem", mux, form.Bytes(), formType},
		{"plain-readall", http.HandlerFunc(readAllHandler), body, "application/wasm"},
	} {
		b.Run("backend="+backend.name, func(b *testing.B) {
			srv := httptest.NewServer(backend.h)
			defer srv.Close()
			url := srv.URL + "/v1/transform"
			var mu sync.Mutex
			var lat []time.Duration
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
				// Read answers as an HTTP client library does, in large
				// reads (io.Discard's own are 8 KiB).
				sink := make([]byte, 256<<10)
				var mine []time.Duration
				for pb.Next() {
					t0 := time.Now()
					resp, err := client.Post(url, backend.bodyType, bytes.NewReader(backend.body))
					if err != nil {
						b.Error(err)
						return
					}
					n, _ := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, sink)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK || n <= int64(len(body)) {
						b.Errorf("status %d, %d bytes", resp.StatusCode, n)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			}
		})
	}
}

// BenchmarkCallMark is the transform path for a small module without a
// network (the handler on an httptest recorder), with the plugin's calls
// counted in flight (quarantine.Mark, as the daemon does with a state
// directory) and without: what the count costs a call. Whichever runs
// second is slower, whatever it is (BENCHMARKS.md): compare runs of both
// orders.
func BenchmarkCallMark(b *testing.B) {
	state, dir := b.TempDir(), b.TempDir()
	file := filepath.Join(dir, "same_v1.0.0.so")
	require.NoError(b, os.WriteFile(file, []byte("x"), 0o644))
	store := &quarantine.Store{Dir: state}
	_, err := store.Begin()
	require.NoError(b, err)
	require.NoError(b, store.Loading("same", "1.0.0", file, ""))
	body := []byte("\x00asm\x01\x00\x00\x00")
	for _, tc := range []struct {
		name string
		mark *quarantine.Mark
	}{{"counted", store.Mark("same", "1.0.0")}, {"uncounted", nil}} {
		b.Run(tc.name, func(b *testing.B) {
			svc, err := transform.New(transform.Config{}, []transform.Plugin{{Name: "same", Version: "1.0.0", Mark: tc.mark,
				Transformer: sameTransformer{}}})
			require.NoError(b, err)
			mux := http.NewServeMux()
			svc.Register(mux)
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, "/v1/transform/same", bytes.NewReader(body))
				w := httptest.NewRecorder()
				mux.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					b.Fatal(w.Code, w.Body.String())
				}
			}
		})
	}
}

// sameTransformer returns its input.
type sameTransformer struct{}

func (sameTransformer) Version() string    { return "1.0.0" }
func (sameTransformer) IsAcceptable() bool { return true }
func (sameTransformer) Transform(_ context.Context, b []byte, _ contract.Config) ([]byte, error) {
	return b, nil
}
