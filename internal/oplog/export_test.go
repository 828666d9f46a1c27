package oplog

// SetFault makes w ask fault before each write ("write"), sync ("sync")
// and undo ("truncate") of an append; an error fails that step as the
// disk would: a failed write has written the first half of the append's
// bytes.
func (w *Writer) SetFault(fault func(op string) error) { w.fault = fault }

// SetFault gives every Writer j opens the fault (see Writer.SetFault),
// told the worker.
func (j *FileJournal) SetFault(fault func(worker, op string) error) { j.fault = fault }

// Waiting returns how many appends to worker's open oplog wait for a sync.
func (j *FileJournal) Waiting(worker string) int {
	j.mu.Lock()
	ow := j.open[worker]
	j.mu.Unlock()
	if ow == nil {
		return 0
	}
	ow.w.mu.Lock()
	defer ow.w.mu.Unlock()
	return len(ow.w.waiting)
}
