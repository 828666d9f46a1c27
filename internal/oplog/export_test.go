package oplog

// SetFault makes w ask fault before each write ("write"), sync ("sync")
// and undo ("truncate") of an append; an error fails that step as the
// disk would: a failed write has written the first half of the append's
// bytes.
func (w *Writer) SetFault(fault func(op string) error) { w.fault = fault }

// SetLimit bounds r to a's committed end of r's worker, as delivery's
// reads are.
func (r *Reader) SetLimit(wm *Watermarks) { r.limit = wm.limiter(r.worker) }

// SetFault gives every Writer a opens the fault (see Writer.SetFault),
// told the worker.
func (a *Appender) SetFault(fault func(worker, op string) error) { a.fault = fault }
