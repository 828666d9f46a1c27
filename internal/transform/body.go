package transform

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/soplug/soplug/internal/inflight"
)

// firstBuffer is the most a body's buffer starts with before any of it
// has arrived, whatever Content-Length promises: it doubles as the bytes
// come.
const firstBuffer = 64 << 10

// readBody reads the request body into one buffer with Slack bytes of room
// after it (see readAll): a first 64 KiB, then Content-Length's worth. Past MaxBytes it is a 413, without reading when
// Content-Length already says so; a Content-Length the budget cannot hold
// now is a 503 before anything is read. The caller releases the returned
// Charge when the response is written.
func (s *Service) readBody(w http.ResponseWriter, r *http.Request, p *Plugin) ([]byte, *inflight.Charge, *failure) {
	charge := s.cfg.Budget.Charge()
	cl := r.ContentLength
	switch {
	case cl > s.cfg.MaxBytes:
		return nil, charge, s.tooBig(p)
	case cl == 0:
		return nil, charge, nil
	}
	if err := s.cfg.Budget.Admit(cl + Slack); cl > 0 && err != nil {
		return nil, charge, busy(p, err)
	}
	buf, f := s.readAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBytes), cl, cl > 0, s.cfg.MaxBytes, charge, p)
	if f != nil {
		charge.Release()
	}
	return buf, charge, f
}

// isTimeout reports whether err is a read deadline that passed: the
// server's ReadTimeout, a 408.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Service) tooBig(p *Plugin) *failure {
	return &failure{code: http.StatusRequestEntityTooLarge, p: p, msg: fmt.Sprintf("the component is larger than the limit of %d bytes", s.cfg.MaxBytes)}
}

func busy(p *Plugin, err error) *failure {
	return &failure{code: http.StatusServiceUnavailable, p: p, retry: true, msg: err.Error() + "; retry"}
}

// readAll reads src into one buffer with Slack bytes of room after it,
// allocated as the bytes arrive: a first buffer of at most 64 KiB, then,
// once that is full, one of size bytes when size says how large the body
// is (at most), or one twice as large each time it fills when it does
// not. A client that announces a large body and sends nothing holds only
// the first buffer. When exact, src is size bytes: it ends there, and an
// end before is a 400. Each buffer is charged to charge before it is
// allocated: one the budget cannot hold is a 503. More than limit bytes is
// a 413.
func (s *Service) readAll(src io.Reader, size int64, exact bool, limit int64, charge *inflight.Charge, p *Plugin) ([]byte, *failure) {
	grow := func(buf []byte) ([]byte, error) {
		var want int
		switch {
		case cap(buf) == 0:
			want = firstBuffer + Slack
			if size > 0 {
				want = min(want, int(size)+Slack)
			}
		case size > 0 && cap(buf) < int(size)+Slack:
			want = int(size) + Slack
		default:
			want = 2 * cap(buf)
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
		if exact && int64(len(buf)) == size {
			return buf, nil // the server's reader ends the body there
		}
		if cap(buf)-len(buf) <= Slack { // no room for one byte more
			nb, err := grow(buf)
			if err != nil {
				return nil, busy(p, err)
			}
			buf = nb
		}
		n, err := src.Read(buf[len(buf) : cap(buf)-Slack])
		buf = buf[:len(buf)+n]
		var maxErr *http.MaxBytesError
		switch {
		case errors.As(err, &maxErr), int64(len(buf)) > limit:
			return nil, s.tooBig(p)
		case (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && exact && int64(len(buf)) < size:
			return nil, &failure{code: http.StatusBadRequest, p: p, msg: fmt.Sprintf("reading the body: it ended after %d of the %d bytes Content-Length announced", len(buf), size)}
		case errors.Is(err, io.EOF):
			return buf, nil
		case isTimeout(err):
			return nil, &failure{code: http.StatusRequestTimeout, p: p, msg: "reading the body: it did not arrive within the server's read timeout: " + err.Error()}
		case err != nil:
			return nil, &failure{code: http.StatusBadRequest, p: p, msg: "reading the body: " + err.Error()}
		}
	}
}
