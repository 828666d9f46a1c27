package transform

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
)

// readBody reads the request body into one buffer with Slack bytes of room
// after it: sized from Content-Length when the client sent one, grown by
// doubling otherwise. Past MaxBytes it is a 413, without reading further
// when Content-Length already says so.
func (s *Service) readBody(w http.ResponseWriter, r *http.Request, p *Plugin) ([]byte, *failure) {
	tooBig := &failure{code: http.StatusRequestEntityTooLarge, p: p, msg: fmt.Sprintf("the body is larger than the limit of %d bytes", s.cfg.MaxBytes)}
	if r.ContentLength > s.cfg.MaxBytes {
		return nil, tooBig
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBytes)
	var buf []byte
	if r.ContentLength >= 0 {
		buf = make([]byte, r.ContentLength, r.ContentLength+Slack)
		if _, err := io.ReadFull(body, buf); err != nil {
			return nil, &failure{code: http.StatusBadRequest, p: p, msg: "reading the body: " + err.Error()}
		}
		return buf, nil
	}
	buf = make([]byte, 0, 64<<10)
	for {
		if cap(buf)-len(buf) < Slack {
			buf = slices.Grow(buf, cap(buf))
		}
		n, err := body.Read(buf[len(buf) : cap(buf)-Slack])
		buf = buf[:len(buf)+n]
		var maxErr *http.MaxBytesError
		switch {
		case errors.As(err, &maxErr):
			return nil, tooBig
		case errors.Is(err, io.EOF):
			return buf, nil
		case err != nil:
			return nil, &failure{code: http.StatusBadRequest, p: p, msg: "reading the body: " + err.Error()}
		}
	}
}
