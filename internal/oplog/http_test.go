package oplog_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/oplog"
)

// appendServer serves an Appender of dir with a body limit of max.
func appendServer(t *testing.T, dir string, max int64) string {
	t.Helper()
	url, _ := serveAppender(t, oplog.AppenderConfig{Dir: dir, MaxBytes: max})
	return url
}

// serveAppender serves an Appender configured by cfg (on a FileJournal on
// cfg.Dir when cfg.Journal is nil), and returns its URL and journal
// and the Appender.
func serveAppender(t *testing.T, cfg oplog.AppenderConfig) (string, oplog.Journal) {
	t.Helper()
	if cfg.Journal == nil {
		j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: cfg.Dir})
		t.Cleanup(func() { j.Close() })
		cfg.Journal = j
	}
	a := oplog.NewAppender(cfg)
	mux := http.NewServeMux()
	mux.Handle("POST /v1/workers/{id}/oplog", a)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, cfg.Journal
}

func postEntries(t *testing.T, url, worker string, body []byte) (int, oplog.ErrorResponse, oplog.AppendResponse) {
	t.Helper()
	resp, err := http.Post(url+"/v1/workers/"+worker+"/oplog", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var raw json.RawMessage
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&raw))
	var e oplog.ErrorResponse
	var ok oplog.AppendResponse
	_ = json.Unmarshal(raw, &e)
	_ = json.Unmarshal(raw, &ok)
	return resp.StatusCode, e, ok
}

func appendBody(first, n int, payload string) []byte {
	var req oplog.AppendRequest
	for i := range n {
		req.Entries = append(req.Entries, oplog.AppendEntry{Index: uint64(first + i), Kind: "invoke", Payload: []byte(payload)})
	}
	b, _ := json.Marshal(req)
	return b
}

// TestAppendHTTP: every status of the append endpoint, and that the oplog
// holds exactly the accepted entries.
func TestAppendHTTP(t *testing.T) {
	dir := t.TempDir()
	url := appendServer(t, dir, 4<<10)
	code, _, ok := postEntries(t, url, "w", appendBody(1, 3, "x"))
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, oplog.AppendResponse{Worker: "w", Appended: 3, NextIndex: 4}, ok)

	held, err := oplog.OpenWriter(dir, "other")
	require.NoError(t, err)
	defer held.Close()

	cases := []struct {
		name, worker string
		body         []byte
		code         int
		msg          string
		expected     uint64
	}{
		{"a resend that differs", "w", appendBody(3, 1, "z"), 409, "entry 3 differs from the one the oplog holds (its payload)", 0},
		{"gap", "w", appendBody(9, 1, "x"), 409, "entry index 9, expected 4", 4},
		{"not json", "w", []byte("index=4"), 400, "not an append request", 0},
		{"unknown field", "w", []byte(`{"entries":[{"index":4,"kind":"k","extra":1}]}`), 400, `unknown field "extra"`, 0},
		{"no entries", "w", []byte(`{"entries":[]}`), 400, "no entries", 0},
		{"bad worker", "-w", appendBody(1, 1, "x"), 400, "invalid worker ID", 0},
		{"long kind", "w", []byte(`{"entries":[{"index":4,"kind":"` + strings.Repeat("k", 300) + `"}]}`), 400, "kind is 300 bytes", 0},
		{"too large", "w", appendBody(4, 1, strings.Repeat("x", 8<<10)), 413, "larger than 4096 bytes", 0},
		{"held by a worker", "other", appendBody(1, 1, "x"), 423, "being written by another process", 0},
		{"trailing garbage", "w", append(appendBody(4, 1, "x"), "garbage"...), 400, "continues after the append request", 0},
		{"a second object", "w", append(appendBody(4, 1, "x"), appendBody(5, 1, "x")...), 400, "continues after the append request", 0},
		{"before 1678", "w", []byte(`{"entries":[{"index":4,"kind":"k","timestamp":"1600-01-01T00:00:00Z"}]}`), 400, "timestamp 1600-01-01T00:00:00Z is outside what an oplog stores", 0},
		{"after 2262", "w", []byte(`{"entries":[{"index":4,"kind":"k","timestamp":"2263-01-01T00:00:00Z"}]}`), 400, "timestamp 2263-01-01T00:00:00Z is outside", 0},
		{"year 9999", "w", []byte(`{"entries":[{"index":4,"kind":"k","timestamp":"9999-12-31T23:59:59Z"}]}`), 400, "is outside what an oplog stores", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, e, _ := postEntries(t, url, tc.worker, tc.body)
			require.Equal(t, tc.code, code, e.Error)
			assert.Contains(t, e.Error, tc.msg)
			assert.Equal(t, tc.expected, e.ExpectedIndex)
			assert.NotContains(t, e.Error, dir, "the server's paths stay on the server")
		})
	}
	// Trailing white space is no second value.
	code, e, _ := postEntries(t, url, "w", append(appendBody(4, 1, "y"), " \n\t"...))
	require.Equal(t, http.StatusOK, code, e.Error)
	code, _, ok = postEntries(t, url, "w", appendBody(5, 1, "y"))
	require.Equal(t, http.StatusOK, code)
	assert.EqualValues(t, 6, ok.NextIndex)
	got, err := readAll(t, dir, "w")
	require.NoError(t, err)
	require.Len(t, got, 5)
	assert.Equal(t, "y", string(got[3].Payload))
	assert.Equal(t, "y", string(got[4].Payload))
}

// TestAppendDiskFull: 507 when the disk is full, with nothing appended, and
// appends succeed again once there is room.
func TestAppendDiskFull(t *testing.T) {
	dir := tmpfs(t, "256k")
	url := appendServer(t, dir, 1<<20)
	next := 1
	for {
		code, e, _ := postEntries(t, url, "w", appendBody(next, 10, strings.Repeat("p", 1000)))
		if code == http.StatusInsufficientStorage {
			assert.Contains(t, e.Error, "no space left on device; nothing was appended")
			break
		}
		require.Equal(t, http.StatusOK, code, e.Error)
		next += 10
		require.Less(t, next, 10000, "the tmpfs never filled")
	}
	got, err := readAll(t, dir, "w")
	require.NoError(t, err, "no torn record is left")
	assert.Len(t, got, next-1)

	out, err := exec.Command("mount", "-o", "remount,size=1m", dir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	code, e, _ := postEntries(t, url, "w", appendBody(next, 10, strings.Repeat("p", 1000)))
	assert.Equal(t, http.StatusOK, code, "the same append succeeds once there is room: %s", e.Error)
}
