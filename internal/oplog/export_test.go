package oplog

// SetFault makes w ask fault before each write ("write"), sync ("sync")
// and undo ("truncate") of an append; an error fails that step as the
// disk would: a failed write has written the first half of the append's
// bytes.
func (w *Writer) SetFault(fault func(op string) error) { w.fault = fault }

// SetFault gives every Writer j opens the fault (see Writer.SetFault),
// told the worker.
func (j *FileJournal) SetFault(fault func(worker, op string) error) { j.fault = fault }
