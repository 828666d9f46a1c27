package oplog_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// entries returns n entries of worker from index first.
func entries(worker string, first uint64, n int) []contract.Entry {
	out := make([]contract.Entry, n)
	for i := range out {
		idx := first + uint64(i)
		out[i] = contract.Entry{WorkerID: worker, Index: idx, Timestamp: t0.Add(time.Duration(idx) * time.Second),
			Kind: []string{"invoke", "http-request", "log"}[idx%3], Payload: fmt.Appendf(nil, "payload %d", idx)}
	}
	return out
}

// appendN writes n entries to worker's oplog in dir, from its next index.
func appendN(t testing.TB, dir, worker string, n int) {
	t.Helper()
	w, err := oplog.OpenWriter(dir, worker)
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.Append(entries(worker, w.Next(), n)...))
}

// oneMore writes n entries to worker's oplog, then one more, and returns
// the file's bytes before and after the last one.
func oneMore(t *testing.T, dir, worker string, n int) (whole, full []byte) {
	t.Helper()
	appendN(t, dir, worker, n)
	whole, err := os.ReadFile(oplog.Path(dir, worker))
	require.NoError(t, err)
	appendN(t, dir, worker, 1)
	full, err = os.ReadFile(oplog.Path(dir, worker))
	require.NoError(t, err)
	return whole, full
}

// readAll reads worker's oplog from the start.
func readAll(t testing.TB, dir, worker string) ([]contract.Entry, error) {
	t.Helper()
	r, err := oplog.OpenReader(dir, worker)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var all []contract.Entry
	for {
		es, err := r.Read(7, 100) // small batches and chunks: every boundary case
		all = append(all, es...)
		if err != nil || len(es) == 0 {
			return all, err
		}
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	appendN(t, dir, "w1", 50)
	appendN(t, dir, "w1", 25) // a second writer continues at 51
	got, err := readAll(t, dir, "w1")
	require.NoError(t, err)
	assert.Equal(t, entries("w1", 1, 75), got)

	big := contract.Entry{Index: 76, Timestamp: t0, Kind: "blob", Payload: make([]byte, 1<<20)}
	w, err := oplog.OpenWriter(dir, "w1")
	require.NoError(t, err)
	assert.EqualValues(t, 76, w.Next(), "the next index is found from the end of the file")
	require.NoError(t, w.Append(big))
	require.NoError(t, w.Close())
	got, err = readAll(t, dir, "w1")
	require.NoError(t, err)
	require.Len(t, got, 76)
	assert.Len(t, got[75].Payload, 1<<20, "a record larger than the read size is read whole")
}

// TestBadAppends: each refusal leaves the oplog as it was.
func TestBadAppends(t *testing.T) {
	dir := t.TempDir()
	appendN(t, dir, "w", 3)
	w, err := oplog.OpenWriter(dir, "w")
	require.NoError(t, err)
	defer w.Close()
	cases := []struct {
		name     string
		entries  []contract.Entry
		sentinel error
		msg      string
		expected uint64
	}{
		{"duplicate", entries("w", 3, 1), oplog.ErrOutOfOrder, "entry index 3, expected 4", 4},
		{"gap", entries("w", 6, 1), oplog.ErrOutOfOrder, "entry index 6, expected 4", 4},
		{"gap inside", append(entries("w", 4, 1), entries("w", 6, 1)...), oplog.ErrOutOfOrder, "entry index 6, expected 5", 5},
		{"other worker", entries("x", 4, 1), oplog.ErrEntry, `belongs to worker "x"`, 0},
		{"long kind", []contract.Entry{{Index: 4, Kind: string(make([]byte, 300))}}, oplog.ErrEntry, "kind is 300 bytes", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := w.Append(tc.entries...)
			require.ErrorIs(t, err, tc.sentinel)
			assert.Contains(t, err.Error(), tc.msg)
			var oe *oplog.OrderError
			if errors.As(err, &oe) {
				assert.Equal(t, tc.expected, oe.Expected)
			}
		})
	}
	got, err := readAll(t, dir, "w")
	require.NoError(t, err)
	assert.Equal(t, entries("w", 1, 3), got)

	_, err = oplog.OpenWriter(dir, "w")
	assert.ErrorIs(t, err, oplog.ErrLocked, "one writer at a time")
	_, err = oplog.OpenWriter(dir, "../escape")
	assert.ErrorIs(t, err, oplog.ErrWorkerID)
}

// TestTornRecord: a reader stops before a record that is still being
// written and waits for it; a writer that died leaves it, and the next
// writer cuts it off.
func TestTornRecord(t *testing.T) {
	dir := t.TempDir()
	path := oplog.Path(dir, "w")
	whole, full := oneMore(t, dir, "w", 10)
	record := full[len(whole):]

	for _, cut := range []int{1, 7, len(record) - 1} {
		t.Run(fmt.Sprintf("%d of %d bytes", cut, len(record)), func(t *testing.T) {
			require.NoError(t, os.WriteFile(path, append(append([]byte{}, whole...), record[:cut]...), 0o644))
			r, err := oplog.OpenReader(dir, "w")
			require.NoError(t, err)
			defer r.Close()
			es, err := r.Read(100, 1<<20)
			assert.Len(t, es, 10, "the complete records are delivered")
			require.ErrorIs(t, err, oplog.ErrTorn)
			assert.Contains(t, err.Error(), fmt.Sprintf("%s at offset %d", path, len(whole)))
			es, err = r.Read(100, 1<<20)
			assert.Empty(t, es, "nothing is skipped")
			assert.ErrorIs(t, err, oplog.ErrTorn)

			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			require.NoError(t, err)
			_, err = f.Write(record[cut:]) // the writer finishes
			require.NoError(t, err)
			require.NoError(t, f.Close())
			es, err = r.Read(100, 1<<20)
			require.NoError(t, err)
			require.Len(t, es, 1)
			assert.EqualValues(t, 11, es[0].Index)

			// The writer died this time: the next one cuts the rest.
			require.NoError(t, os.WriteFile(path, append(append([]byte{}, whole...), record[:cut]...), 0o644))
			w, err := oplog.OpenWriter(dir, "w")
			require.NoError(t, err)
			assert.EqualValues(t, cut, w.Cut)
			assert.EqualValues(t, 11, w.Next())
			require.NoError(t, w.Append(entries("w", 11, 1)...))
			require.NoError(t, w.Close())
			got, err := readAll(t, dir, "w")
			require.NoError(t, err)
			assert.Equal(t, entries("w", 1, 11), got)
		})
	}
}

// TestCorruptRecord: a flipped byte, a wrong length or a wrong header stops
// the reader at that record with the file and offset. A writer finds the
// end from the last record, so it refuses to append after a corrupt last
// record or header; one in the middle is the readers' to report.
func TestCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	appendN(t, dir, "w", 5)
	path := oplog.Path(dir, "w")
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	starts := []int{8 + 1 + 1 + 1 + 4} // magic, version, id length, "w", CRC
	for i := 0; i < 5; i++ {
		at := starts[i]
		starts = append(starts, at+8+int(binary.LittleEndian.Uint32(good[at:])))
	}
	third, last := starts[2], starts[4]
	cases := []struct {
		name   string
		edit   func([]byte)
		at     int // offset reported; -1: the header
		before int // entries read before it
		writer bool
		msg    string
	}{
		{"flipped payload byte", func(b []byte) { b[starts[3]-1] ^= 0xff }, third, 2, false, "checksum mismatch"},
		{"huge length", func(b []byte) { b[third+3] = 0x7f }, third, 2, false, "a record length of"},
		{"flipped byte in the last record", func(b []byte) { b[len(b)-1] ^= 0xff }, last, 4, true, "checksum mismatch"},
		{"another header", func(b []byte) { b[0] = 'X' }, -1, 0, true, "not an oplog of worker"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := append([]byte{}, good...)
			tc.edit(bad)
			require.NoError(t, os.WriteFile(path, bad, 0o644))
			got, err := readAll(t, dir, "w")
			if tc.at >= 0 {
				assert.Equal(t, entries("w", 1, tc.before), got, "the records before it are read")
				assert.Contains(t, err.Error(), fmt.Sprintf("%s at offset %d", path, tc.at))
			}
			require.ErrorIs(t, err, oplog.ErrCorrupt)
			assert.Contains(t, err.Error(), tc.msg)
			w, werr := oplog.OpenWriter(dir, "w")
			if tc.writer {
				assert.ErrorIs(t, werr, oplog.ErrCorrupt, "no append after a corrupt end")
			} else {
				require.NoError(t, werr)
				w.Close()
			}
			after, _ := os.ReadFile(path)
			assert.Equal(t, bad, after, "nothing was changed")
		})
	}
}

// TestDiskFull appends to a 1 MiB tmpfs until it is full: the failing
// append leaves nothing behind, and every append that succeeded is read
// back.
func TestDiskFull(t *testing.T) {
	dir := tmpfs(t, "1m")
	w, err := oplog.OpenWriter(dir, "w")
	require.NoError(t, err)
	defer w.Close()
	var appendErr error
	for i := 0; i < 1000 && appendErr == nil; i++ {
		appendErr = w.Append(entries("w", w.Next(), 100)...) // about 4 KiB
	}
	require.ErrorIs(t, appendErr, syscall.ENOSPC)
	ok := w.Next() - 1
	got, err := readAll(t, dir, "w")
	require.NoError(t, err, "no torn record is left behind")
	assert.Equal(t, entries("w", 1, int(ok)), got)
	assert.Greater(t, ok, uint64(100))
}

// tmpfs mounts a tmpfs of size (mount's notation) on a new folder and
// returns it; the test is skipped where that cannot be done.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	return dir
}
