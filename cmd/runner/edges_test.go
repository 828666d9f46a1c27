package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHTTPEdges: what a real runner answers at the edges of HTTP/1.1
// framing, on raw connections. Content-Length with Transfer-Encoding (the
// smuggling pair) is a 400 and the connection closes, so the request hidden
// in its body never runs; keep-alive requests with chunked bodies and
// extensions before it are answered as usual; a body still arriving at
// --read-timeout is a 408 with Connection: close, on the transform and the
// append paths.
func TestHTTPEdges(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	d := start(t, examples, "--oplog-dir", filepath.Join(work, "oplog"), "--read-header-timeout", "2s", "--read-timeout", "3s")
	addr := <-d.addr
	d.waitLog(t, `msg=ready`)
	dial := func(t *testing.T) (net.Conn, *bufio.Reader) {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
		return conn, bufio.NewReader(conn)
	}
	read := func(t *testing.T, br *bufio.Reader) (*http.Response, string) {
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(b)
	}

	t.Run("smuggling", func(t *testing.T) {
		conn, br := dial(t)
		hidden := "POST /v1/workers/smuggled/oplog HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n" + `{"entries":[{"index":1,"kind":"smuggled","payload":"aGk="}]}`
		body := "0\r\n\r\n" + hidden
		_, err := io.WriteString(conn, "POST /v1/transform/wasmtag HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\nTransfer-Encoding: chunked\r\n\r\n"+body)
		require.NoError(t, err)
		resp, text := read(t, br)
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, text)
		assert.True(t, resp.Close, "Connection: close")
		assert.Contains(t, text, "both Content-Length and Transfer-Encoding")
		_, err = http.ReadResponse(br, nil)
		assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF), "no answer to the hidden request, the connection is closed: %v", err)
		oplog := get(t, "http://"+addr+"/v1/oplog")
		assert.NotContains(t, oplog, "smuggled", "the hidden append never ran")
	})

	t.Run("keep-alive with chunked bodies", func(t *testing.T) {
		conn, br := dial(t)
		chunked := "POST /v1/workers/kept/oplog HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
		entry := `{"entries":[{"index":1,"kind":"Content-Length: 5","payload":"VHJhbnNmZXItRW5jb2Rpbmc6IGNodW5rZWQ="}]}`
		chunked += "10;ext=1\r\n" + entry[:16] + "\r\n" + strconv.FormatInt(int64(len(entry)-16), 16) + "\r\n" + entry[16:] + "\r\n0\r\n\r\n"
		_, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"+chunked+"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
		require.NoError(t, err)
		for _, want := range []int{http.StatusOK, http.StatusOK, http.StatusOK} {
			resp, text := read(t, br)
			assert.Equal(t, want, resp.StatusCode, text)
			assert.False(t, resp.Close, "the connection stays open: %s", text)
		}
	})

	for path, start := range map[string]string{"/v1/transform/wasmtag": "\x00asm", "/v1/workers/slow/oplog": `{"entries":[`} {
		t.Run("a body past --read-timeout: "+path, func(t *testing.T) {
			conn, br := dial(t)
			_, err := io.WriteString(conn, "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"+start)
			require.NoError(t, err)
			resp, text := read(t, br)
			assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode, text)
			assert.True(t, resp.Close, "Connection: close")
			assert.Contains(t, text, "did not arrive within the server's read timeout")
		})
	}
}
