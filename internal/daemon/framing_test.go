package daemon

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestFraming follows streams of requests as a server reads them, whole
// and a byte at a time: only a request whose headers carry both
// Content-Length and Transfer-Encoding is marked, wherever it comes in a
// keep-alive stream, and whatever the bodies before it hold.
func TestFraming(t *testing.T) {
	const (
		get     = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
		inner   = "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" // 65 bytes
		post    = "POST /v1/transform HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n" + inner
		chunked = "POST /v1/transform HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" +
			"2f;ext=1\r\nContent-Length: 5\r\nTransfer-Encoding: x\r\n\r\nab\r\n\r\n" + "3\r\nxyz\r\n" + "0\r\nTrailer: Content-Length: 9\r\n\r\n"
		both     = "POST /v1/transform HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/oplog HTTP/1.1\r\nHost: x\r\n\r\n"
		bothCase = "POST / HTTP/1.1\r\ntransfer-ENCODING: chunked\r\ncontent-length : 0\r\n\r\n"
	)
	if len(inner) != 65 {
		t.Fatalf("inner is %d bytes", len(inner))
	}
	for _, tc := range []struct {
		name   string
		stream string
		want   bool
	}{
		{"one GET", get, false},
		{"a body that looks like headers", post + get, false},
		{"chunks that look like headers", chunked + get, false},
		{"a leading CRLF", "\r\n" + get, false},
		{"both headers", both, true},
		{"both, after keep-alive requests", get + post + chunked + both, true},
		{"both, any case and spacing", bothCase, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var whole framing
			assert.Equal(t, tc.want, whole.feed([]byte(tc.stream)), "fed at once")
			var bytewise framing
			got := false
			for i := range len(tc.stream) {
				got = bytewise.feed([]byte{tc.stream[i]}) || got
			}
			assert.Equal(t, tc.want, got, "fed a byte at a time")
		})
	}
}
