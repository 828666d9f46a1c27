package daemon

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// server serves HTTP on a set of listeners and drains without dropping a
// request on a connection it accepted.
//
// http.Server.Shutdown alone is not enough here: a connection accepted just
// before it whose request arrives just after is closed unanswered (the
// server checks for shutdown after reading a request), and a client does
// not retry the first request of a fresh connection. So drain first closes
// the listeners (with socket activation systemd keeps the socket, and new
// connections wait in its queue for the next process), turns keep-alives
// off so every connection closes after its response, waits until every
// accepted connection has closed, and only then calls Shutdown.
type server struct {
	srv     *http.Server
	lns     []net.Listener
	open    atomic.Int64 // accepted connections not yet closed
	serving sync.WaitGroup
	errs    chan error
}

func newServer(srv *http.Server, lns []net.Listener) *server {
	s := &server{srv: srv, errs: make(chan error, len(lns))}
	hook := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed || st == http.StateHijacked {
			s.open.Add(-1)
		}
		if hook != nil {
			hook(c, st)
		}
	}
	for _, ln := range lns {
		s.lns = append(s.lns, &countingListener{Listener: ln, open: &s.open})
	}
	return s
}

// start serves every listener. A serve loop that fails before drain is
// reported on errs.
func (s *server) start() {
	for _, ln := range s.lns {
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			s.errs <- s.srv.Serve(ln)
		}()
	}
}

// drain stops accepting, answers what was accepted, and shuts the server
// down, within ctx.
func (s *server) drain(ctx context.Context) error {
	s.srv.SetKeepAlivesEnabled(false) // also closes the idle keep-alive connections
	for _, ln := range s.lns {
		ln.Close()
	}
	s.serving.Wait() // no Accept is in progress after this
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for s.open.Load() > 0 {
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), s.srv.Shutdown(ctx))
		case <-tick.C:
		}
	}
	return s.srv.Shutdown(ctx)
}

// countingListener counts the connections it accepts, so that one is
// counted from the moment Accept returns it, before the server tracks it.
type countingListener struct {
	net.Listener
	open *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.open.Add(1)
	}
	return c, err
}
