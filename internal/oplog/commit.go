package oplog

import "fmt"

// waiter is an append written and waiting for the sync that covers it.
type waiter struct {
	end  int64 // the end of its records
	done bool
	err  error
}

// commit returns once the oplog is synced up to end, the end of an append
// just written; with mu held. Appends that wait share a sync: the first
// that finds none under way syncs everything written so far, the others
// wait for it. A failed sync fails every append not yet synced, which are
// cut off; what is synced stays.
func (w *Writer) commit(end int64) error {
	if end <= w.synced {
		return nil
	}
	me := &waiter{end: end}
	w.waiting = append(w.waiting, me)
	for !me.done {
		if w.syncing {
			w.cond.Wait()
			continue
		}
		w.syncAll()
	}
	return me.err
}

// syncAll syncs what is written, with mu held; mu is released during the
// sync unless syncEach, so that appends go on being written behind it.
func (w *Writer) syncAll() {
	w.syncing = true
	target, targetNext := w.size, w.next
	if !w.syncEach {
		w.mu.Unlock()
	}
	err := w.sync()
	if !w.syncEach {
		w.mu.Lock()
	}
	w.syncing = false
	defer w.cond.Broadcast()
	if err == nil {
		w.synced, w.syncedNext = target, targetNext
		w.settle(target, nil)
		if w.watermark != nil {
			w.watermark.Store(target)
		}
		return
	}
	// What the failed sync leaves on disk is unknown: everything past the
	// synced end is cut off, never taken as written, and its appends are
	// answered as failed, including those written during the sync.
	err = fmt.Errorf("oplog: syncing %s: %w", w.path, err)
	w.size, w.next = w.synced, w.syncedNext
	w.forgetFrom(w.synced)
	w.settle(-1, w.undo(err))
}

// settle ends the waiting appends whose end is at most upTo (all of them
// when upTo is -1) with err.
func (w *Writer) settle(upTo int64, err error) {
	keep := w.waiting[:0]
	for _, p := range w.waiting {
		if upTo >= 0 && p.end > upTo {
			keep = append(keep, p)
			continue
		}
		p.done, p.err = true, err
	}
	clear(w.waiting[len(keep):])
	w.waiting = keep
}

// forgetFrom drops the recent record starts at or past off: appends cut
// off.
func (w *Writer) forgetFrom(off int64) {
	keep := w.recent[:0]
	for _, m := range w.recent {
		if m.off < off {
			keep = append(keep, m)
		}
	}
	w.recent, w.recentAt = keep, 0
}
