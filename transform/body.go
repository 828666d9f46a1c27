package transform

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/soplug/soplug/internal/inflight"
)

// firstBuffer is the most a body's buffer starts with before any of it
// has arrived, whatever Content-Length promises: it doubles as the bytes
// come.
const firstBuffer = 64 << 10

// readBody reads the request body into one buffer with Slack bytes of room
// after it, allocated as the body arrives: from a small first buffer,
// doubling, never past Content-Length (+ Slack) when the client sent one.
// Past MaxBytes it is a 413, without reading when Content-Length already
// says so. The buffer is charged against Config.Budget as it grows: a
// Content-Length the budget cannot hold now is a 503 before anything is
// read, and so is a body whose next doubling it cannot hold. A client that
// announces a body and sends nothing holds nothing. The caller releases
// the returned Charge when the response is written.
func (s *Service) readBody(w http.ResponseWriter, r *http.Request, p *Plugin) ([]byte, *inflight.Charge, *failure) {
	charge := s.cfg.Budget.Charge()
	fail := func(f *failure) ([]byte, *inflight.Charge, *failure) {
		charge.Release()
		return nil, charge, f
	}
	tooBig := &failure{code: http.StatusRequestEntityTooLarge, p: p, msg: fmt.Sprintf("the body is larger than the limit of %d bytes", s.cfg.MaxBytes)}
	busy := func(err error) *failure {
		return &failure{code: http.StatusServiceUnavailable, p: p, retry: true, msg: err.Error() + "; retry"}
	}
	cl := r.ContentLength
	if cl > s.cfg.MaxBytes {
		return fail(tooBig)
	}
	if cl == 0 {
		return nil, charge, nil
	}
	if err := s.cfg.Budget.Admit(cl + Slack); cl > 0 && err != nil {
		return fail(busy(err))
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBytes)
	grow := func(buf []byte) ([]byte, error) {
		want := max(2*cap(buf), firstBuffer+Slack)
		if cl > 0 {
			want = min(want, int(cl)+Slack)
		}
		if err := charge.Grow(int64(want)); err != nil {
			return nil, err
		}
		nb := make([]byte, len(buf), want) // exactly: slices.Grow rounds up
		copy(nb, buf)
		return nb, nil
	}
	var buf []byte
	for {
		if cl > 0 && int64(len(buf)) == cl {
			return buf, charge, nil // the server's reader ends the body there
		}
		if cap(buf)-len(buf) <= Slack { // no room for one byte more
			nb, err := grow(buf)
			if err != nil {
				return fail(busy(err))
			}
			buf = nb
		}
		n, err := body.Read(buf[len(buf) : cap(buf)-Slack])
		buf = buf[:len(buf)+n]
		var maxErr *http.MaxBytesError
		switch {
		case errors.As(err, &maxErr):
			return fail(tooBig)
		case (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && cl > 0 && int64(len(buf)) < cl:
			return fail(&failure{code: http.StatusBadRequest, p: p, msg: fmt.Sprintf("reading the body: it ended after %d of the %d bytes Content-Length announced", len(buf), cl)})
		case errors.Is(err, io.EOF):
			return buf, charge, nil
		case err != nil:
			return fail(&failure{code: http.StatusBadRequest, p: p, msg: "reading the body: " + err.Error()})
		}
	}
}
