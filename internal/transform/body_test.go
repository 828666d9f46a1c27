package transform_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/inflight"
	"github.com/soplug/soplug/internal/transform"
)

// echo returns its input unchanged.
func echo(_ context.Context, b []byte, _ contract.Config) ([]byte, error) { return b, nil }

// wasmOfSize is a body of n bytes that passes the preamble check.
func wasmOfSize(n int) []byte {
	b := make([]byte, n)
	copy(b, module[:8])
	return b
}

// onlyReader hides every method but Read, so that net/http cannot learn
// the length and sends the body chunked.
type onlyReader struct{ io.Reader }

// client gives every request a deadline: a hang fails the test instead of
// stalling it.
var client = &http.Client{Timeout: 20 * time.Second}

// TestBodySizes sends bodies of every size around the buffer's boundaries
// (its first size, the slack after it, each doubling) up to MaxBytes + 1,
// with Content-Length and chunked: each ends in an answer, 200 with the
// same bytes up to MaxBytes and 413 past it.
func TestBodySizes(t *testing.T) {
	const maxBytes = 300 << 10
	srv, _, _ := serve(t, transform.Config{MaxBytes: maxBytes}, plugin("echo", echo))
	var sizes []int
	for _, edge := range []int{8, 60 << 10, 64 << 10, 124 << 10, 128 << 10, 252 << 10, 256 << 10, maxBytes} {
		for d := -2; d <= 2; d++ {
			sizes = append(sizes, edge+d)
		}
	}
	sizes = append(sizes, 0, 1, 7, maxBytes+4<<10)
	for _, chunked := range []bool{false, true} {
		for _, n := range sizes {
			t.Run(fmt.Sprintf("chunked=%v/%d", chunked, n), func(t *testing.T) {
				in := wasmOfSize(n)
				var body io.Reader = bytes.NewReader(in)
				if chunked {
					body = onlyReader{body}
				}
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/transform", body)
				require.NoError(t, err)
				resp, err := client.Do(req)
				require.NoError(t, err, "every body gets an answer")
				out, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				if chunked {
					// net/http sends a body of unknown length chunked.
					assert.Equal(t, int64(0), req.ContentLength, "the request went chunked")
				}
				switch {
				case n > maxBytes:
					assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, string(out))
				case n < 8:
					assert.Equal(t, http.StatusBadRequest, resp.StatusCode, string(out))
				default:
					require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
					assert.True(t, bytes.Equal(in, out), "the body came back unchanged")
				}
			})
		}
	}
}

// TestBodyCutShort closes the connection part-way through a body that
// announced more: a 400 names what arrived (when the client can still read
// it), and the handler returns at once instead of spinning.
func TestBodyCutShort(t *testing.T) {
	budget := inflight.New(8 << 20)
	srv, _, _ := serve(t, transform.Config{Budget: budget}, plugin("echo", echo))
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	fmt.Fprintf(conn, "POST /v1/transform HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
	_, err = conn.Write(wasmOfSize(70000))
	require.NoError(t, err)
	require.NoError(t, conn.(*net.TCPConn).CloseWrite())
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	out, _ := io.ReadAll(resp.Body)
	conn.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Contains(t, string(out), "70000 of the 100000 bytes")
	assert.Eventually(t, func() bool { return budget.InUse() == 0 }, 5*time.Second, 10*time.Millisecond, "the charge is given back")
}

// TestBudget holds bodies in flight until the budget is full: the next
// request is refused with 503 and Retry-After before its body is read, a
// chunked one as soon as it passes what is left, and every byte charged is
// given back when the requests end.
func TestBudget(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	hold := func(_ context.Context, b []byte, _ contract.Config) ([]byte, error) {
		started.Done()
		<-release
		return b, nil
	}
	budget := inflight.New(1 << 20)
	srv, _, _ := serve(t, transform.Config{Budget: budget}, plugin("hold", hold))
	url := srv.URL + "/v1/transform"

	// Two requests of 400 KiB each stay in the plugin: 800 KiB + slack held.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		started.Add(1)
		wg.Go(func() {
			resp, err := client.Post(url, "application/wasm", bytes.NewReader(wasmOfSize(400<<10)))
			if assert.NoError(t, err) {
				codes[i] = resp.StatusCode
				resp.Body.Close()
			}
		})
	}
	started.Wait()
	assert.Greater(t, budget.InUse(), int64(800<<10))

	for _, c := range []struct {
		name string
		body io.Reader
	}{
		{"content-length", bytes.NewReader(wasmOfSize(300 << 10))},
		{"chunked", onlyReader{bytes.NewReader(wasmOfSize(300 << 10))}},
	} {
		resp, err := client.Post(url, "application/wasm", c.body)
		require.NoError(t, err, c.name)
		var e transform.Error
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&e), c.name)
		resp.Body.Close()
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, c.name)
		assert.Equal(t, "1", resp.Header.Get("Retry-After"), c.name)
		assert.Contains(t, e.Error, "budget for request bodies in flight is exhausted", c.name)
	}
	close(release)
	wg.Wait()
	assert.Equal(t, []int{200, 200}, codes)
	// The handler gives its charge back after the client has its answer.
	assert.Eventually(t, func() bool { return budget.InUse() == 0 }, 5*time.Second, 5*time.Millisecond, "every charge is given back")
	assert.Equal(t, int64(2), budget.Refused())

	// With the budget free again, the same request passes.
	started.Add(1)
	resp, err := client.Post(url, "application/wasm", bytes.NewReader(wasmOfSize(300<<10)))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestMethodNotAllowed: any method but POST gets a JSON 405 naming POST.
func TestMethodNotAllowed(t *testing.T) {
	srv, _, _ := serve(t, transform.Config{}, plugin("tag", nil))
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		for _, path := range []string{"/v1/transform", "/v1/transform/tag"} {
			req, err := http.NewRequest(method, srv.URL+path, nil)
			require.NoError(t, err)
			resp, err := client.Do(req)
			require.NoError(t, err)
			var e transform.Error
			assert.NoError(t, json.NewDecoder(resp.Body).Decode(&e), "%s %s", method, path)
			resp.Body.Close()
			assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
			assert.Equal(t, "POST", resp.Header.Get("Allow"))
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			assert.Contains(t, e.Error, "method "+method+" is not allowed")
		}
	}
}

// TestOverrideEscapes: escaped separators and spaces reach the plugin as
// the characters they stand for.
func TestOverrideEscapes(t *testing.T) {
	var got string
	srv, _, _ := serve(t, transform.Config{}, plugin("tag", func(_ context.Context, b []byte, cfg contract.Config) ([]byte, error) {
		got = cfg["env"]
		return b, nil
	}))
	resp, out := post(t, srv.URL+"/v1/transform?env=a%3Bb+c%26d%3De", bytes.NewReader(module))
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
	assert.Equal(t, "a;b c&d=e", got)
}

// TestAnnouncedButNeverSent: clients that announce the largest body and
// send nothing hold at most one first buffer each, however large the
// announcement, and the budget still admits a real request beside them.
func TestAnnouncedButNeverSent(t *testing.T) {
	const announcers = 50
	budget := inflight.New(16 << 20)
	srv, _, _ := serve(t, transform.Config{Budget: budget, MaxBytes: 8 << 20}, plugin("echo", echo))
	var conns []net.Conn
	for range announcers {
		conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		require.NoError(t, err)
		conns = append(conns, conn)
		fmt.Fprintf(conn, "POST /v1/transform HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 8<<20)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(200 * time.Millisecond) // the handlers are waiting for bodies
	assert.LessOrEqual(t, budget.InUse(), int64(announcers*(64<<10+transform.Slack)), "at most a first buffer each")
	resp, err := client.Post(srv.URL+"/v1/transform", "application/wasm", bytes.NewReader(wasmOfSize(4<<20)))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a real request is admitted beside them")
}
