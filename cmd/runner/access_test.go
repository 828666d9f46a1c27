package main

import (
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/access/accesstest"
	"github.com/soplug/soplug/internal/golemtest"
	"github.com/soplug/soplug/internal/wasm"
)

// Tokens of the tests' tokens files.
const (
	promToken  = "prom-0123456789abcdef0123"
	golemToken = "golem-0123456789abcdef012"
	appendTok  = "append-0123456789abcdef01"
)

// tokensFile writes a tokens file of lines and returns its path.
func tokensFile(t *testing.T, lines ...string) string {
	t.Helper()
	return accesstest.WriteTokens(t, t.TempDir(), lines...)
}

// TestTLSAndTokens runs a runner on TLS with a tokens file, as it would
// face Golem's services on another host: requests without a token, with a
// wrong one or with one of the wrong scope are refused and change nothing;
// Golem's caller, which sends no header of its own, passes with the token
// in its registered URL (and it is never logged); the health probes need
// none; a new certificate is served without a restart.
func TestTLSAndTokens(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	cert := accesstest.WriteCert(t, work, "first")
	tokens := tokensFile(t, "golem transform "+golemToken, "feeder append "+appendTok, "prom control "+promToken)
	d := start(t, examples, "--oplog-dir", filepath.Join(work, "oplog"), "--tokens", tokens, "--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile)
	addr := <-d.addr
	d.waitLog(t, `msg=ready`)
	pid := d.cmd.Process.Pid
	base := "https://" + addr
	client := func(pool *tls.Config) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: pool}}
	}
	c := client(&tls.Config{RootCAs: cert.Pool})
	do := func(t *testing.T, method, path, token, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	entry := func(worker string) string {
		return `{"entries":[{"index":1,"kind":"` + worker + `","payload":"aGk="}]}`
	}

	for _, tc := range []struct {
		name, method, path, token, body string
		code                            int
	}{
		{"health without a token", "GET", "/healthz", "", "", 200},
		{"append without a token", "POST", "/v1/workers/refused-none/oplog", "", entry("refused-none"), 401},
		{"append with a wrong token", "POST", "/v1/workers/refused-bad/oplog", appendTok + "x", entry("refused-bad"), 401},
		{"append with Golem's token", "POST", "/v1/workers/refused-scope/oplog", golemToken, entry("refused-scope"), 403},
		{"append in the query of the wrong scope", "POST", "/v1/workers/refused-query/oplog?access_token=" + golemToken, "", entry("refused-query"), 403},
		{"transform with the append token", "POST", "/v1/transform/wasmtag", appendTok, "\x00asm\x01\x00\x00\x00", 403},
		{"metrics without a token", "GET", "/metrics", "", "", 401},
		{"append", "POST", "/v1/workers/accepted/oplog", appendTok, entry("accepted"), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, tc.method, tc.path, tc.token, tc.body)
			assert.Equal(t, tc.code, code, body)
		})
	}
	code, status := do(t, "GET", "/v1/oplog", promToken, "")
	require.Equal(t, 200, code, status)
	assert.Contains(t, status, `"worker": "accepted"`)
	assert.NotContains(t, status, "refused", "a refused append changed nothing")
	_, metrics := do(t, "GET", "/metrics", promToken, "")
	for _, series := range []string{`soplug_http_refused_total{reason="no_token"} 2`, `soplug_http_refused_total{reason="bad_token"} 1`, `soplug_http_refused_total{reason="scope"} 3`} {
		assert.Contains(t, metrics, series)
	}

	t.Run("Golem's caller with the token in its URL", func(t *testing.T) {
		rel := golemtest.Releases[3]
		in := wasmInput(t, "component.wasm")
		req, err := rel.Request(t.Context(), base+"/v1/transform/wasmtag?access_token="+golemToken, in, nil, nil)
		require.NoError(t, err)
		resp, err := c.Do(req)
		require.NoError(t, err)
		a, err := rel.Read(resp, in)
		require.NoError(t, err)
		_, err = wasm.Check(a.Data)
		assert.NoError(t, err)
		assert.NotContains(t, d.text(), golemToken, "the token is never logged")
	})

	t.Run("a new certificate without a restart", func(t *testing.T) {
		second := accesstest.WriteCert(t, work, "second")
		assert.Eventually(t, func() bool {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: second.Pool})
			if err != nil {
				return false
			}
			defer conn.Close()
			return conn.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(second.Serial) == 0
		}, 15*time.Second, 100*time.Millisecond)
		d.waitLog(t, `msg=reloaded`) // logged after the swap: it may follow the first handshake
		assert.Equal(t, pid, d.cmd.Process.Pid)
		select {
		case <-d.done:
			t.Fatal("the runner exited")
		default:
		}
	})

	t.Run("plain HTTP is not served", func(t *testing.T) {
		_, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/healthz")
		if err == nil {
			t.Fatal("a plain HTTP request was answered")
		}
	})
}

// TestAccessFlags: a tokens file others may read, a certificate without
// its key, and a missing file stop the runner at start with 78 and the
// reason, before anything is served.
func TestAccessFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := tokensFile(t, "ci append "+appendTok)
	require.NoError(t, os.Chmod(open, 0o644))
	cert := accesstest.WriteCert(t, dir, "a")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"world-readable tokens", []string{"--tokens", open}, "lets every user read the tokens"},
		{"no key", []string{"--tls-cert", cert.CertFile}, "TLS needs both a certificate file and a key file"},
		{"missing tokens", []string{"--tokens", filepath.Join(dir, "nope")}, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runner(t, append([]string{"run", "--plugins", examples, "--listen", "127.0.0.1:0"}, tc.args...)...)
			assert.Equal(t, 78, code, stderr)
			assert.Contains(t, stderr, tc.want)
		})
	}
}
