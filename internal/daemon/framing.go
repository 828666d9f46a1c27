package daemon

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
)

// Request smuggling: a request with both Content-Length and
// Transfer-Encoding means one thing to a proxy that reads the one and
// another to a server that reads the other, so that bytes one takes for a
// body the other runs as a second request. RFC 9112 (section 6.1) lets a
// server refuse it and says it must close the connection after answering.
// Go's server reads the Transfer-Encoding, deletes the Content-Length
// before a handler could see it, and keeps the connection open; so the
// framing of each connection's requests is followed here, under the
// server, where both headers are still there.

// framingConn is a connection whose requests' framing is followed as the
// server reads them: it marks the connection once a request's headers carry
// both Content-Length and Transfer-Encoding. Past bytes it cannot read as
// HTTP/1.1 framing it stops following (the server refuses those itself).
type framingConn struct {
	net.Conn
	smuggled atomic.Bool
	f        framing
}

func (c *framingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.f.done {
		if c.f.feed(p[:n]) {
			c.smuggled.Store(true)
		}
	}
	return n, err
}

// framingListener wraps each accepted connection in a framingConn.
type framingListener struct{ net.Listener }

func (l framingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &framingConn{Conn: c}, nil
}

type framingKey struct{}

// framingContext is the server's ConnContext: it lets a request's handler
// find its connection's framingConn.
func framingContext(ctx context.Context, c net.Conn) context.Context {
	if fc, ok := c.(*framingConn); ok {
		return context.WithValue(ctx, framingKey{}, fc)
	}
	return ctx
}

// refuseSmuggling answers a request on a connection marked by its
// framingConn with a 400 and closes the connection after it; every other
// request goes to next.
func refuseSmuggling(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fc, ok := r.Context().Value(framingKey{}).(*framingConn); ok && fc.smuggled.Load() {
			w.Header().Set("Connection", "close")
			http.Error(w, "a request with both Content-Length and Transfer-Encoding is refused (RFC 9112 section 6.1: it may smuggle a second request); send one of them", http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// framing follows HTTP/1.1 request framing over a stream: header sections,
// then Content-Length bytes or chunks, then the next request.
type framing struct {
	state   int
	line    []byte // the line read so far (headers, chunk sizes)
	remain  int64  // body or chunk bytes still to skip
	cl, te  bool   // the current request's headers
	started bool   // its request line is read
	done    bool   // stopped following
}

const (
	inHeaders = iota
	inBody
	inChunkSize
	inChunkData
	inChunkEnd // the CRLF after a chunk's data
	inTrailers
)

// maxLine bounds a line held while following: past it (the server refuses
// headers larger than MaxHeaderBytes) the stream is no longer followed.
const maxLine = MaxHeaderBytes + 4<<10

// feed follows b and reports whether a request's headers just ended with
// both Content-Length and Transfer-Encoding: then, or on framing it cannot
// read, it stops following.
func (f *framing) feed(b []byte) bool {
	for len(b) > 0 && !f.done {
		switch f.state {
		case inBody, inChunkData:
			n := min(int64(len(b)), f.remain)
			b, f.remain = b[n:], f.remain-n
			switch {
			case f.remain > 0:
			case f.state == inBody:
				f.state = inHeaders
			default:
				f.state = inChunkEnd
			}
			continue
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			f.line = append(f.line, b...)
			f.done = len(f.line) > maxLine
			return false
		}
		f.line = append(f.line, b[:i]...)
		b = b[i+1:]
		line := bytes.TrimSuffix(f.line, []byte("\r"))
		smuggled := f.endLine(line)
		f.line = f.line[:0]
		if smuggled {
			f.done = true
			return true
		}
	}
	return false
}

// endLine takes one line of the state's kind.
func (f *framing) endLine(line []byte) bool {
	switch f.state {
	case inHeaders:
		if len(line) == 0 {
			if !f.started {
				return false // a CRLF before the request line
			}
			return f.endHeaders()
		}
		f.started = true
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return false // the request line, or one the server refuses
		}
		switch {
		case bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Length")):
			f.cl = true
			n, err := strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64)
			f.remain = n
			f.done = err != nil || n < 0
		case bytes.EqualFold(bytes.TrimSpace(name), []byte("Transfer-Encoding")):
			f.te = true
		}
	case inChunkSize:
		size, _, _ := bytes.Cut(line, []byte(";"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 64)
		switch {
		case err != nil || n < 0:
			f.done = true
		case n == 0:
			f.state = inTrailers
		default:
			f.remain, f.state = n, inChunkData
		}
	case inChunkEnd:
		f.done = len(line) != 0
		f.state = inChunkSize
	case inTrailers:
		if len(line) == 0 {
			f.state = inHeaders
		}
	}
	return false
}

// endHeaders ends a request's header section: it reports a request with
// both headers, and otherwise moves on to its body.
func (f *framing) endHeaders() bool {
	cl, te := f.cl, f.te
	f.cl, f.te, f.started = false, false, false
	switch {
	case cl && te:
		return true
	case te:
		f.state = inChunkSize
	case f.remain > 0:
		f.state = inBody
	}
	return false
}
