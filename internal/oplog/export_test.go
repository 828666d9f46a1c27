package oplog

import (
	"io"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/inflight"
)

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

// DecodeAppend decodes an append body of worker "w" as the Appender does,
// with no budget; size is the announced length (-1: unknown). It returns
// copies and frees the decoding's memory, as the Appender does, so that
// the next decoding reuses it.
func DecodeAppend(body io.Reader, size int64) ([]contract.Entry, uint64, error) {
	entries, first, d, err := decodeAppend(body, size, "w", inflight.New(0).Charge())
	if err != nil {
		return nil, 0, err
	}
	out := append([]contract.Entry(nil), entries...)
	for i := range out {
		if out[i].Payload != nil {
			out[i].Payload = append([]byte{}, out[i].Payload...)
		}
	}
	d.free()
	return out, first, nil
}

// SetSyncFault makes each syncfs round of j (SyncFileSystem) call fault
// instead, and take its result.
func (j *FileJournal) SetSyncFault(fault func() error) {
	j.fs.mu.Lock()
	defer j.fs.mu.Unlock()
	j.fs.fault = fault
}

// SyncRounds returns how many syncfs rounds j has made.
func (j *FileJournal) SyncRounds() int64 {
	j.fs.mu.Lock()
	defer j.fs.mu.Unlock()
	return j.fs.rounds
}
