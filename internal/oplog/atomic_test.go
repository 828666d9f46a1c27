package oplog_test

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
)

// payloadRecorder is an OplogProcessor that writes down every entry it is
// handed, with its payload, in the order they arrive.
type payloadRecorder struct {
	mu   sync.Mutex
	seen []contract.Entry
}

func (*payloadRecorder) Version() string                             { return "1.0.0" }
func (*payloadRecorder) IsAcceptable() bool                          { return true }
func (*payloadRecorder) Init(context.Context, contract.Config) error { return nil }
func (*payloadRecorder) Close(context.Context) error                 { return nil }
func (r *payloadRecorder) Process(_ context.Context, b contract.Batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range b.Entries {
		e.Payload = append([]byte(nil), e.Payload...)
		r.seen = append(r.seen, e)
	}
	return nil
}

// entries returns what worker "w" was handed.
func (r *payloadRecorder) entries() []contract.Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []contract.Entry
	for _, e := range r.seen {
		if e.WorkerID == "w" {
			out = append(out, e)
		}
	}
	return out
}

// acked is what the clients were told is in the journal: index -> payload.
type acked map[uint64]string

// checkExactlyAcked asserts that rec received every acked entry of worker
// "w" once, in order, with the payload that was acked, and nothing else.
func checkExactlyAcked(t *testing.T, rec *payloadRecorder, want acked) {
	t.Helper()
	eventually(t, "every acked entry delivered", func() bool { return len(rec.entries()) >= len(want) })
	time.Sleep(100 * time.Millisecond) // a delivery past the acked ones would show now
	got := rec.entries()
	var idx []uint64
	for _, e := range got {
		idx = append(idx, e.Index)
	}
	require.Equal(t, seq(1, uint64(len(want))), idx, "deliveries: exactly the acked entries, once each, in order")
	for _, e := range got {
		if want[e.Index] != string(e.Payload) {
			t.Fatalf("entry %d was delivered with a payload of %d bytes that was never acked (acked: %d bytes)", e.Index, len(e.Payload), len(want[e.Index]))
		}
	}
}

// TestFailedAppendIsNeverDelivered: appends whose write or sync fails (a
// disk that fills part-way, an EIO at fsync; and one whose undo fails as
// well) are answered 507 or 500, and
// delivery, which reads the oplog meanwhile, never hands a processor any
// of their bytes; the client's rebuilt resend (other payload sizes, the
// same indexes) then succeeds, and the processor sees each acked entry
// once, with its acked payload, also after a restart of the delivery.
func TestFailedAppendIsNeverDelivered(t *testing.T) {
	dir, cursors := t.TempDir(), t.TempDir()
	j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: dir})
	defer j.Close()
	url, _ := serveAppender(t, oplog.AppenderConfig{Journal: j})
	var mu sync.Mutex
	failNext := map[string]bool{} // the steps the next append fails at
	j.SetFault(func(_, op string) error {
		mu.Lock()
		fail := failNext[op]
		delete(failNext, op)
		mu.Unlock()
		switch {
		case !fail:
			return nil
		case op == "truncate":
			return syscall.EIO
		}
		time.Sleep(60 * time.Millisecond) // delivery, woken by the write, reads the file meanwhile
		if op == "write" {
			return syscall.ENOSPC
		}
		return syscall.EIO
	})
	rec := &payloadRecorder{}
	_, stop := run(t, oplog.Config{Dir: dir, CursorDir: cursors, Journal: j}, rec)
	want := acked{}
	next := 1
	post := func(payload string, n int) (int, oplog.ErrorResponse) {
		code, e, _ := postEntries(t, url, "w", appendBody(next, n, payload))
		return code, e
	}
	for round := range 32 {
		var steps []string
		status := http.StatusOK
		switch round % 4 {
		case 1:
			steps, status = []string{"write"}, http.StatusInsufficientStorage
		case 2:
			steps, status = []string{"sync"}, http.StatusInternalServerError
		case 3: // and the undo fails too: the next append cuts first
			steps, status = []string{"write", "truncate"}, http.StatusInsufficientStorage
		}
		mu.Lock()
		for _, s := range steps {
			failNext[s] = true
		}
		mu.Unlock()
		payload := fmt.Sprintf("round %d ", round) + strings.Repeat("x", 200+round*53)
		code, e := post(payload, 6)
		require.Equal(t, status, code, "round %d: %s", round, e.Error)
		if code != http.StatusOK {
			assert.Contains(t, e.Error, "nothing was appended")
			payload = "rebuilt " + payload[:len(payload)/3] // the client's resend differs in size
			code, e = post(payload, 6)
			require.Equal(t, http.StatusOK, code, "round %d: the resend: %s", round, e.Error)
		}
		for i := range 6 {
			want[uint64(next+i)] = payload
		}
		next += 6
	}
	checkExactlyAcked(t, rec, want)

	stop()
	_, stop = run(t, oplog.Config{Dir: dir, CursorDir: cursors, Journal: j}, rec)
	defer stop()
	code, e := post("after the restart", 1)
	require.Equal(t, http.StatusOK, code, e.Error)
	want[uint64(next)] = "after the restart"
	checkExactlyAcked(t, rec, want)
}

// TestDiskFullDelivery: on a real full file system, appends answered 507
// (and retried while it stays full, and resent rebuilt) are never
// delivered; once space frees the same append succeeds with no restart,
// delivery reaches the end, and every acked entry arrives once.
func TestDiskFullDelivery(t *testing.T) {
	dir, cursors := tmpfs(t, "256k"), t.TempDir()
	j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: dir})
	defer j.Close()
	url, _ := serveAppender(t, oplog.AppenderConfig{Journal: j})
	rec := &payloadRecorder{}
	_, stop := run(t, oplog.Config{Dir: dir, CursorDir: cursors, Journal: j}, rec)
	defer stop()
	want := acked{}
	next := 1
	payload := func(n int) string { return fmt.Sprintf("%05d", n) + strings.Repeat("p", n) }
	full := 0
	for full < 200 {
		size := 900 + (next*37)%400 // the client rebuilds: every try a new size
		code, e, _ := postEntries(t, url, "w", appendBody(next, 10, payload(size)))
		switch code {
		case http.StatusOK:
			for i := range 10 {
				want[uint64(next+i)] = payload(size)
			}
			next += 10
		case http.StatusInsufficientStorage:
			assert.Contains(t, e.Error, "nothing was appended")
			full++
		default:
			t.Fatalf("status %d: %s", code, e.Error)
		}
		require.Less(t, next, 100000, "the tmpfs never filled")
	}
	checkExactlyAcked(t, rec, want)

	out, err := exec.Command("mount", "-o", "remount,size=2m", dir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for range 20 {
		code, e, _ := postEntries(t, url, "w", appendBody(next, 10, payload(1000)))
		require.Equal(t, http.StatusOK, code, "appends succeed again once there is room: %s", e.Error)
		for i := range 10 {
			want[uint64(next+i)] = payload(1000)
		}
		next += 10
	}
	checkExactlyAcked(t, rec, want)
}
