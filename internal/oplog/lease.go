package oplog

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrLeased: another runner holds the lease on a worker's delivery. A
// CursorStore shared by several runners returns it (as a *LeaseError)
// from Get while another runner's lease on the worker runs, and from Put
// once another runner took the worker: the Deliverer then stops
// delivering it, acknowledges nothing more, and looks again when the
// lease ends or the worker has new entries.
var ErrLeased = errors.New("oplog: another runner delivers this worker")

// LeaseError is ErrLeased with the lease's holder and end.
type LeaseError struct {
	Worker string
	// Owner names the runner that holds the lease.
	Owner string
	// Until is when the lease ends unless its owner renews it.
	Until time.Time
}

func (e *LeaseError) Error() string {
	return fmt.Sprintf("%v: %s is leased to %s until %s", ErrLeased, e.Worker, e.Owner, e.Until.UTC().Format(time.RFC3339Nano))
}

// Unwrap returns ErrLeased.
func (e *LeaseError) Unwrap() error { return ErrLeased }

// leaseCheck is how often a Deliverer looks at the workers leased to
// other runners whose lease has ended.
const leaseCheck = 250 * time.Millisecond

// leasedTo records that w is leased to another runner (the error says
// until when), and drops its position: when w is delivered here again,
// its cursor is read afresh, in-flight mark and all.
func (w *worker) leasedTo(err error) {
	if m := w.d.cfg.Metrics; m != nil {
		if w.pos != nil {
			m.lease(w.d.name, "lost")
		} else {
			m.lease(w.d.name, "refused")
		}
	}
	w.pos = nil
	var le *LeaseError
	until := time.Now().Add(leaseCheck)
	if errors.As(err, &le) {
		until = le.Until
	}
	w.set(StateLeased, err)
	if le != nil {
		w.mu.Lock()
		w.st.Owner, w.st.LeaseUntil = le.Owner, le.Until.UTC()
		w.mu.Unlock()
	}
	d := w.d
	d.mu.Lock()
	if d.leased == nil {
		d.leased = map[*worker]time.Time{}
	}
	d.leased[w] = until
	if !d.checking && !d.stopped {
		// Started by the first leased worker (a journal that no runner
		// shares never has one). This goroutine is one of Run's, so the
		// WaitGroup is not at zero.
		d.checking = true
		d.wg.Go(func() { d.checkLeases(d.stop) })
	}
	d.mu.Unlock()
}

// checkLeases pokes, every leaseCheck until stop, the workers leased to
// other runners whose lease has ended, so that a runner that died is
// replaced with no new entry to wake its workers.
func (d *Deliverer) checkLeases(stop context.Context) {
	t := time.NewTicker(leaseCheck)
	defer t.Stop()
	for {
		select {
		case <-stop.Done():
			return
		case now := <-t.C:
			var due []*worker
			d.mu.Lock()
			for w, until := range d.leased {
				if !now.Before(until) {
					due = append(due, w)
					delete(d.leased, w)
				}
			}
			d.mu.Unlock()
			for _, w := range due {
				w.poke()
			}
		}
	}
}
