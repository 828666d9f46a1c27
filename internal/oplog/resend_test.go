package oplog_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/oplog"
)

// body is an append request of entries first.. with payloads p<index><tag>
// and, when ts is not zero, that timestamp.
func body(first, n int, tag string, ts time.Time) []byte {
	var req oplog.AppendRequest
	for i := range n {
		req.Entries = append(req.Entries, oplog.AppendEntry{Index: uint64(first + i), Timestamp: ts, Kind: "invoke", Payload: fmt.Appendf(nil, "p%d%s", first+i, tag)})
	}
	b, _ := json.Marshal(req)
	return b
}

// TestResend: an at-least-once sender's resends. Identical ones are 200
// with the first send's answer and write nothing; one that overlaps and
// extends writes the rest; one that differs anywhere in the overlap is 409
// naming the first differing index and writes nothing, its new tail
// included. Delivery sees each entry once, with the first send's payload.
func TestResend(t *testing.T) {
	ts := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	dir, cursors := t.TempDir(), t.TempDir()
	j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: dir, MaxOpen: 1})
	defer j.Close()
	// MaxOpen 1: the other worker's appends close w's oplog in between,
	// so that resends are also compared by a writer that reopened it.
	url, _ := serveAppender(t, oplog.AppenderConfig{Journal: j})
	rec := &payloadRecorder{}
	_, stop := run(t, oplog.Config{Dir: dir, CursorDir: cursors, Journal: j}, rec)
	defer stop()

	want := acked{}
	for i := range 100 { // 100 appends of 5: more than a writer remembers
		code, e, ok := postEntries(t, url, "w", body(1+5*i, 5, "", ts))
		require.Equal(t, http.StatusOK, code, e.Error)
		require.Equal(t, oplog.AppendResponse{Worker: "w", Appended: 5, NextIndex: uint64(6 + 5*i)}, ok)
		for j := range 5 {
			want[uint64(1+5*i+j)] = fmt.Sprintf("p%d", 1+5*i+j)
		}
	}
	cases := []struct {
		name      string
		body      []byte
		code      int
		answer    oplog.AppendResponse
		conflict  uint64
		msg       string
		newTagged int // entries 501.. now held with tag "n"
	}{
		{"the last append again", body(496, 5, "", ts), 200, oplog.AppendResponse{Worker: "w", Appended: 5, NextIndex: 501}, 0, "", 0},
		{"the first append again", body(1, 5, "", ts), 200, oplog.AppendResponse{Worker: "w", Appended: 5, NextIndex: 6}, 0, "", 0},
		{"an old one, past the recent marks", body(101, 5, "", ts), 200, oplog.AppendResponse{Worker: "w", Appended: 5, NextIndex: 106}, 0, "", 0},
		{"one entry in the middle of an append", body(250, 1, "", ts), 200, oplog.AppendResponse{Worker: "w", Appended: 1, NextIndex: 251}, 0, "", 0},
		{"across appends", body(3, 300, "", ts), 200, oplog.AppendResponse{Worker: "w", Appended: 300, NextIndex: 303}, 0, "", 0},
		{"without timestamps", body(10, 5, "", time.Time{}), 200, oplog.AppendResponse{Worker: "w", Appended: 5, NextIndex: 15}, 0, "", 0},
		{"another payload", body(498, 3, "x", ts), 409, oplog.AppendResponse{}, 498, "entry 498 differs from the one the oplog holds (its payload)", 0},
		{"another timestamp", body(7, 2, "", ts.Add(time.Nanosecond)), 409, oplog.AppendResponse{}, 7, "(its timestamp)", 0},
		{"differs at the end of the overlap, and extends", mixed(t, 496, 10, 500, ts), 409, oplog.AppendResponse{}, 500, "entry 500 differs", 0},
		{"overlaps and extends", extend(t, 498, 3, 4, ts), 200, oplog.AppendResponse{Worker: "w", Appended: 7, NextIndex: 505}, 0, "", 4},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// another worker in between: w's writer is closed and reopened
			code, e, _ := postEntries(t, url, "other", body(1+i, 1, "", ts))
			require.Equal(t, http.StatusOK, code, e.Error)

			code, e, ok := postEntries(t, url, "w", tc.body)
			require.Equal(t, tc.code, code, e.Error)
			assert.Equal(t, tc.conflict, e.ConflictIndex)
			assert.Contains(t, e.Error, tc.msg)
			if code == http.StatusOK {
				assert.Equal(t, tc.answer, ok, "a resend is answered as its first send was")
			}
			for i := range tc.newTagged {
				want[uint64(501+i)] = fmt.Sprintf("p%dn", 501+i)
			}
		})
	}
	// Many clients send the same new append at once: all 200, one copy.
	var mu sync.Mutex
	var wg sync.WaitGroup
	codes := map[int]int{}
	resend := body(505, 6, "n", ts)
	for range 16 {
		wg.Go(func() {
			code, _, _ := postEntries(t, url, "w", resend)
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	assert.Equal(t, map[int]int{200: 16}, codes)
	for i := range 6 {
		want[uint64(505+i)] = fmt.Sprintf("p%dn", 505+i)
	}
	checkExactlyAcked(t, rec, want)
}

// extend is a request of held entries first.. (as first sent) followed by
// more new ones, tagged "n".
func extend(t *testing.T, first, held, more int, ts time.Time) []byte {
	t.Helper()
	var a, b oplog.AppendRequest
	require.NoError(t, json.Unmarshal(body(first, held, "", ts), &a))
	require.NoError(t, json.Unmarshal(body(first+held, more, "n", ts), &b))
	out, err := json.Marshal(oplog.AppendRequest{Entries: append(a.Entries, b.Entries...)})
	require.NoError(t, err)
	return out
}

// mixed is n entries from first whose payloads are as first sent below
// differ, and tagged "x" from differ on.
func mixed(t *testing.T, first, n, differ int, ts time.Time) []byte {
	t.Helper()
	var a, b oplog.AppendRequest
	require.NoError(t, json.Unmarshal(body(first, differ-first, "", ts), &a))
	require.NoError(t, json.Unmarshal(body(differ, first+n-differ, "x", ts), &b))
	out, err := json.Marshal(oplog.AppendRequest{Entries: append(a.Entries, b.Entries...)})
	require.NoError(t, err)
	return out
}
