package access_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/access"
	"github.com/soplug/soplug/internal/access/accesstest"
)

const (
	golemToken = "golem-0123456789abcdef"
	ciToken    = "ci-0123456789abcdef012"
	opsToken   = "ops-0123456789abcdef01"
)

// TestTokensFile: every mistake in a tokens file is an error naming the
// file, the line and the reason; comments and blank lines are nothing.
func TestTokensFile(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"good", "# name scopes token\n\ngolem transform " + golemToken + "  # Golem's caller\nci transform,append " + ciToken + "\n", ""},
		{"two fields", "golem transform\n", ":1: want three fields, name, scopes and token; got 2"},
		{"four fields", "golem transform " + golemToken + " extra\n", ":1: want three fields"},
		{"unknown scope", "\nci transform,admin " + ciToken + "\n", `:2: token ci: unknown scope "admin" (scopes: transform, append, control)`},
		{"empty scope", "ci transform, " + ciToken + "\n", `:1: token ci: unknown scope ""`},
		{"short token", "ci append 0123456789abcde\n", ":1: token ci: 15 bytes, shorter than 16"},
		{"name twice", "ci append " + ciToken + "\nci control " + opsToken + "\n", ":2: name ci is also on line 1"},
		{"token twice", "ci append " + ciToken + "\nops control " + ciToken + "\n", ":2: token ops is the token of line 1 too"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tk, err := access.ParseTokens("/etc/soplug/tokens", []byte(tc.body))
			if tc.want == "" {
				require.NoError(t, err)
				assert.Equal(t, 2, tk.Len())
				return
			}
			require.ErrorIs(t, err, access.ErrTokens)
			assert.Contains(t, err.Error(), "/etc/soplug/tokens"+tc.want)
		})
	}
	t.Run("readable by every user", func(t *testing.T) {
		path := accesstest.WriteTokens(t, t.TempDir(), "ci append "+ciToken)
		require.NoError(t, os.Chmod(path, 0o644))
		_, err := access.LoadTokens(path)
		require.ErrorIs(t, err, access.ErrTokens)
		assert.Contains(t, err.Error(), path+": mode -rw-r--r-- lets every user read the tokens (chmod o-r)")
	})
	t.Run("missing", func(t *testing.T) {
		_, err := access.LoadTokens(filepath.Join(t.TempDir(), "nope"))
		require.ErrorIs(t, err, access.ErrTokens)
		assert.ErrorIs(t, err, os.ErrNotExist)
	})
}

// TestGuard: each route's scope, each way of presenting a token, each
// refusal's status, challenge and count; a refused request never reaches
// the handler behind.
func TestGuard(t *testing.T) {
	path := accesstest.WriteTokens(t, t.TempDir(), "golem transform "+golemToken, "ci transform,append "+ciToken, "ops control "+opsToken)
	g, err := access.New(access.Config{TokensFile: path})
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	reg.MustRegister(g.Collectors()...)
	reached := 0
	h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ }))
	for _, tc := range []struct {
		name, method, target, auth string
		code                       int
		challenge, msg             string
	}{
		{"health needs none", "GET", "/healthz", "", 200, "", ""},
		{"ready needs none", "GET", "/readyz", "", 200, "", ""},
		{"no token", "POST", "/v1/transform/tag", "", 401, `Bearer realm="soplug"`, "a token is needed"},
		{"another scheme", "POST", "/v1/transform/tag", "Basic Z29sZW06eA==", 401, `Bearer realm="soplug"`, "a token is needed"},
		{"bearer without a token", "POST", "/v1/transform/tag", "Bearer ", 401, `Bearer realm="soplug"`, "a token is needed"},
		{"a wrong token", "POST", "/v1/transform/tag", "Bearer " + golemToken + "x", 401, `error="invalid_token"`, "the token is not one of the runner's"},
		{"a token's prefix", "POST", "/v1/transform/tag", "Bearer " + golemToken[:16], 401, `error="invalid_token"`, ""},
		{"transform", "POST", "/v1/transform/tag", "Bearer " + golemToken, 200, "", ""},
		{"the chain", "POST", "/v1/transform", "bearer " + golemToken, 200, "", ""},
		{"in the query", "POST", "/v1/transform/tag?access_token=" + golemToken + "&env=x", "", 200, "", ""},
		{"the header wins", "POST", "/v1/transform/tag?access_token=" + golemToken, "Bearer nope-nope-nope-nope", 401, `error="invalid_token"`, ""},
		{"append without the scope", "POST", "/v1/workers/w1/oplog", "Bearer " + golemToken, 403, `error="insufficient_scope", scope="append"`, "token golem may not call POST /v1/workers/w1/oplog: it needs scope append (it has transform)"},
		{"append", "POST", "/v1/workers/w1/oplog", "Bearer " + ciToken, 200, "", ""},
		{"status without the scope", "GET", "/v1/oplog", "Bearer " + ciToken, 403, `scope="control"`, "it has transform, append"},
		{"metrics", "GET", "/metrics", "Bearer " + opsToken, 200, "", ""},
		{"an unknown path is control's", "GET", "/v1/nosuch", "Bearer " + golemToken, 403, `scope="control"`, ""},
		{"a look-alike path", "POST", "/v1/transformer", "Bearer " + golemToken, 403, `scope="control"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := reached
			r := httptest.NewRequest(tc.method, tc.target, strings.NewReader("body"))
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			assert.Equal(t, tc.code, w.Code, w.Body.String())
			if tc.code != 200 {
				assert.Equal(t, before, reached, "a refused request never reaches the handler")
				assert.Contains(t, w.Header().Get("WWW-Authenticate"), tc.challenge)
				var e map[string]string
				require.NoError(t, json.Unmarshal(w.Body.Bytes(), &e))
				assert.Contains(t, e["error"], tc.msg)
				assert.NotContains(t, w.Body.String(), golemToken[:16], "the answer never repeats a token")
				return
			}
			assert.Equal(t, before+1, reached)
		})
	}
	for reason, n := range map[string]float64{"no_token": 3, "bad_token": 3, "scope": 4} {
		assert.Equal(t, n, counter(t, reg, "soplug_http_refused_total", reason), reason)
	}
}

// counter reads a counter of reg: name, with reason as its one label
// when reason is not empty.
func counter(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if reason == "" || m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series %s %s", name, reason)
	return 0
}

// TestReload: a changed tokens file or certificate is in use within
// CheckEvery of the change, without a restart; one that cannot be loaded
// (a half-written certificate, a tokens file with a mistake) leaves the
// one before in use, and is counted.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	tokens := accesstest.WriteTokens(t, dir, "ci append "+ciToken)
	first := accesstest.WriteCert(t, dir, "first")
	g, err := access.New(access.Config{TokensFile: tokens, CertFile: first.CertFile, KeyFile: first.KeyFile})
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	reg.MustRegister(g.Collectors()...)
	srv := httptest.NewUnstartedServer(g.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	srv.TLS = g.TLSConfig()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes refused on purpose
	srv.StartTLS()
	defer srv.Close()

	serial := func(pool *tls.Config) (string, error) {
		conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), pool)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	call := func(token string) int {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		req, _ := http.NewRequest("POST", srv.URL+"/v1/workers/w/oplog", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	s, err := serial(&tls.Config{RootCAs: first.Pool, ServerName: "localhost"})
	require.NoError(t, err)
	require.Equal(t, first.Serial.String(), s)
	require.Equal(t, 200, call(ciToken))

	// Rotation: a new certificate and a new token.
	second := accesstest.WriteCert(t, dir, "second")
	accesstest.WriteTokens(t, dir, "ci append "+opsToken)
	assert.Eventually(t, func() bool {
		s, err := serial(&tls.Config{RootCAs: second.Pool, ServerName: "localhost"})
		return err == nil && s == second.Serial.String()
	}, 10*time.Second, 50*time.Millisecond, "the new certificate is served")
	assert.Eventually(t, func() bool { return call(opsToken) == 200 }, 10*time.Second, 50*time.Millisecond, "the new token is taken")
	assert.Equal(t, 401, call(ciToken), "the old token is gone")

	// Broken files keep what was loaded.
	require.NoError(t, os.WriteFile(second.CertFile, []byte("-----BEGIN CERTIFICATE-----\nhalf"), 0o600))
	require.NoError(t, os.WriteFile(tokens, []byte("ci append short\n"), 0o600))
	assert.Eventually(t, func() bool {
		_, _ = serial(&tls.Config{RootCAs: second.Pool, ServerName: "localhost"}) // files are looked at when used
		call(opsToken)
		return counter(t, reg, "soplug_access_reload_failures_total", "") == 2
	}, 10*time.Second, 50*time.Millisecond, "both failed reloads are counted")
	s, err = serial(&tls.Config{RootCAs: second.Pool, ServerName: "localhost"})
	require.NoError(t, err)
	assert.Equal(t, second.Serial.String(), s, "the certificate loaded before is still served")
	assert.Equal(t, 200, call(opsToken), "the tokens loaded before are still in use")
}

// TestGuardConfig: a certificate without its key, or files that are not a
// pair, are errors at New naming them.
func TestGuardConfig(t *testing.T) {
	dir := t.TempDir()
	c := accesstest.WriteCert(t, dir, "a")
	_, err := access.New(access.Config{CertFile: c.CertFile})
	assert.ErrorContains(t, err, "TLS needs both a certificate file and a key file")
	other := accesstest.WriteCert(t, t.TempDir(), "b")
	_, err = access.New(access.Config{CertFile: c.CertFile, KeyFile: other.KeyFile})
	assert.ErrorContains(t, err, "access: TLS certificate "+c.CertFile+" and key "+other.KeyFile)
	var none *access.Guard
	assert.Nil(t, none.TLSConfig())
	h := http.NotFoundHandler()
	assert.NotNil(t, none.Handler(h))
}
