package oplog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/inflight"
	"github.com/soplug/soplug/internal/oplog"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	all, _ := countFDs(t)
	return all
}

// countFDs counts this process's open file descriptors, all and those of
// oplog files, in one reading.
func countFDs(t *testing.T) (all, oplogs int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasSuffix(l, oplog.Suffix) {
			oplogs++
		}
	}
	return len(ents), oplogs
}

// oplogFiles lists the oplog files in dir.
func oplogFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+oplog.Suffix))
	require.NoError(t, err)
	return m
}

// TestAppenderManyWorkers: two thousand new worker IDs, from eight clients
// at once, keep at most MaxOpen oplogs open; refused first appends leave
// no file and no descriptor; a worker whose oplog was closed appends again
// from where it was; and one delivery of all of them keeps at most
// Parallel files open while it catches up.
func TestAppenderManyWorkers(t *testing.T) {
	const maxOpen, workers, clients = 16, 2000, 8
	dir := t.TempDir()
	j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: dir, MaxOpen: maxOpen})
	defer j.Close()
	url, _ := serveAppender(t, oplog.AppenderConfig{Journal: j})
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	post := func(worker string, body []byte) int {
		resp, err := client.Post(url+"/v1/workers/"+worker+"/oplog", "application/json", bytes.NewReader(body))
		if !assert.NoError(t, err) {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Warm the connections, so that what is counted next is the oplogs.
	require.Equal(t, http.StatusOK, post("warm", appendBody(1, 2, "x")))
	base := openFDs(t)

	var wg sync.WaitGroup
	var mu sync.Mutex
	peak, peakOplogs := 0, 0
	each := func(n int, fn func(i int)) {
		next := make(chan int)
		for range clients {
			wg.Go(func() {
				for i := range next {
					fn(i)
					if i%50 == 0 {
						fds, oplogs := countFDs(t)
						mu.Lock()
						peak, peakOplogs = max(peak, fds), max(peakOplogs, oplogs)
						mu.Unlock()
					}
				}
			})
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	each(workers, func(i int) {
		assert.Equal(t, http.StatusOK, post(fmt.Sprintf("worker-%04d", i), appendBody(1, 2, "x")))
	})
	assert.LessOrEqual(t, j.OpenWriters(), maxOpen)
	// Each client may hold one oplog over the limit while its request
	// runs. Its connection is two descriptors here (both ends), and its
	// transport may dial a new one before the last is back in its idle
	// pool (seen: 20 sockets for 8 clients), so the whole is bounded more
	// loosely: by the clients, never by the workers.
	assert.LessOrEqual(t, peakOplogs, maxOpen+clients, "open oplogs stay bounded")
	assert.LessOrEqual(t, peak, base+maxOpen+clients+4*clients, "open descriptors stay bounded (base %d)", base)
	assert.Len(t, oplogFiles(t, dir), workers+1)

	// A thousand new IDs whose first append is refused: no file, no
	// descriptor.
	before := openFDs(t)
	each(1000, func(i int) {
		assert.Equal(t, http.StatusConflict, post(fmt.Sprintf("refused-%04d", i), appendBody(7, 1, "x")))
	})
	assert.Len(t, oplogFiles(t, dir), workers+1, "a refused first append leaves no oplog")
	assert.LessOrEqual(t, openFDs(t), before+clients)

	// worker-0000's oplog was closed long ago: it goes on at index 3.
	require.Equal(t, http.StatusOK, post("worker-0000", appendBody(3, 1, "x")))
	require.Equal(t, http.StatusConflict, post("worker-0001", appendBody(4, 1, "x")), "a reopened oplog knows its next index")
	require.Equal(t, http.StatusConflict, post("worker-0001", appendBody(1, 1, "y")), "a reopened oplog knows what it holds")
	require.Equal(t, http.StatusOK, post("worker-0001", appendBody(1, 2, "x")), "and takes an identical resend")

	rec := newRecorder()
	const parallel = 4
	before = openFDs(t)
	peak = 0
	d, _ := run(t, oplog.Config{Dir: dir, CursorDir: t.TempDir(), Parallel: parallel, Poll: 50 * time.Millisecond}, rec)
	deadline := time.Now().Add(60 * time.Second)
	for {
		peak = max(peak, openFDs(t))
		done := 0
		for _, s := range d.Status() {
			if s.State == oplog.StateIdle && s.Acked >= 2 {
				done++
			}
		}
		if done == workers+1 {
			break
		}
		require.True(t, time.Now().Before(deadline), "delivered to %d of %d workers", done, workers+1)
		time.Sleep(5 * time.Millisecond)
	}
	assert.Equal(t, 3, rec.count("worker-0000"))
	// The delivery's own watcher (3), an oplog per delivery slot and two
	// files per cursor write at once.
	assert.LessOrEqual(t, peak, before+3+3*parallel, "a delivery keeps at most Parallel oplogs open (base %d)", before)
}

// TestAppenderBudget: a body the budget cannot hold gets 503 with
// Retry-After before it is read, with Content-Length or chunked, and the
// budget is whole again after every request.
func TestAppenderBudget(t *testing.T) {
	dir := t.TempDir()
	budget := inflight.New(64 << 10)
	url, _ := serveAppender(t, oplog.AppenderConfig{Dir: dir, Budget: budget})

	small := appendBody(1, 1, "x")
	big := appendBody(2, 1, strings.Repeat("p", 30<<10)) // 40 KiB of JSON: its window, payload and record, 100 KiB
	for _, tc := range []struct {
		name string
		body func() *http.Request
		code int
	}{
		{"fits", func() *http.Request { return req(t, url, "w", bytes.NewReader(small)) }, http.StatusOK},
		{"content-length over the budget", func() *http.Request { return req(t, url, "w", bytes.NewReader(big)) }, http.StatusServiceUnavailable},
		{"chunked over the budget", func() *http.Request { return req(t, url, "w", struct{ *bytes.Reader }{bytes.NewReader(big)}) }, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.DefaultClient.Do(tc.body())
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, tc.code, resp.StatusCode)
			if tc.code == http.StatusServiceUnavailable {
				assert.Equal(t, "1", resp.Header.Get("Retry-After"))
			}
			assert.Eventually(t, func() bool { return budget.InUse() == 0 }, 5*time.Second, 5*time.Millisecond)
		})
	}
	got, err := readAll(t, dir, "w")
	require.NoError(t, err)
	assert.Len(t, got, 1, "a refused body appends nothing")
}

func req(t *testing.T, url, worker string, body interface{ Read([]byte) (int, error) }) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, url+"/v1/workers/"+worker+"/oplog", body)
	require.NoError(t, err)
	return r
}

// TestTimestampBounds: the first and last instants an oplog stores read
// back exactly.
func TestTimestampBounds(t *testing.T) {
	dir := t.TempDir()
	w, err := oplog.OpenWriter(dir, "w")
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.Append(
		contract.Entry{Index: 1, Timestamp: oplog.MinTimestamp, Kind: "k"},
		contract.Entry{Index: 2, Timestamp: oplog.MaxTimestamp, Kind: "k"}))
	for _, ts := range []time.Time{oplog.MinTimestamp.Add(-time.Nanosecond), oplog.MaxTimestamp.Add(time.Nanosecond)} {
		assert.ErrorIs(t, w.Append(contract.Entry{Index: 3, Timestamp: ts, Kind: "k"}), oplog.ErrEntry, ts)
	}
	got, err := readAll(t, dir, "w")
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.True(t, got[0].Timestamp.Equal(oplog.MinTimestamp), got[0].Timestamp)
	assert.True(t, got[1].Timestamp.Equal(oplog.MaxTimestamp), got[1].Timestamp)
}

// TestVanishedOplogsAreForgotten: oplog files that appear and go away
// before their delivery could open them (empty or cut short, then
// removed) leave no worker behind, a worker of that name that comes back
// later is delivered, and is forgotten when its oplog is removed.
func TestVanishedOplogsAreForgotten(t *testing.T) {
	dir := t.TempDir()
	rec := newRecorder()
	reg := prometheus.NewRegistry()
	m, err := oplog.NewMetrics(reg)
	require.NoError(t, err)
	d, _ := run(t, oplog.Config{Dir: dir, CursorDir: t.TempDir(), Poll: 20 * time.Millisecond, Metrics: m}, rec)
	workers := func() float64 { // soplug_oplog_workers summed over the states
		mfs, err := reg.Gather()
		require.NoError(t, err)
		n := 0.0
		for _, mf := range mfs {
			if mf.GetName() == "soplug_oplog_workers" {
				for _, s := range mf.GetMetric() {
					n += s.GetGauge().GetValue()
				}
			}
		}
		return n
	}
	const ghosts = 300
	for i := range ghosts {
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("ghost-%03d%s", i, oplog.Suffix)), []byte("SOPLUG"), 0o644))
	}
	eventually(t, "the ghosts are seen", func() bool { return len(d.Status()) == ghosts })
	for i := range ghosts {
		require.NoError(t, os.Remove(filepath.Join(dir, fmt.Sprintf("ghost-%03d%s", i, oplog.Suffix))))
	}
	eventually(t, "the ghosts are forgotten", func() bool { return len(d.Status()) == 0 })
	assert.Zero(t, workers(), "nor any count of them")

	appendN(t, dir, "ghost-007", 3)
	eventually(t, "a name that comes back is delivered", func() bool { return rec.count("ghost-007") == 3 })
	assert.Equal(t, 1.0, workers())

	// A delivered worker whose oplog is removed is forgotten too.
	require.NoError(t, os.Remove(oplog.Path(dir, "ghost-007")))
	eventually(t, "a removed oplog's worker is forgotten", func() bool { return len(d.Status()) == 0 })
	assert.Zero(t, workers())
}

// TestAppenderReusesNothingInUse: many clients at once append entries
// whose payloads all differ (sizes across the decoder's chunks, some past
// its window, some refused for a gap), so that each request's decoding
// reuses the memory of one before it: every journal then holds exactly
// what its client sent.
func TestAppenderReusesNothingInUse(t *testing.T) {
	const clients, requests = 8, 40
	dir := t.TempDir()
	j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: dir})
	defer j.Close()
	url, _ := serveAppender(t, oplog.AppenderConfig{Journal: j})
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	payload := func(worker string, idx uint64) []byte {
		n := int(idx*7919) % 9000 // up to past the 4 KiB first chunk and between the chunk sizes
		if idx%37 == 0 {
			n = 70 << 10 // past the window and the chunks: a buffer of its own
		}
		return append(fmt.Appendf(nil, "%s#%d:", worker, idx), bytes.Repeat([]byte{byte(idx)}, n)...)
	}
	post := func(worker string, first uint64, n int) int {
		var req oplog.AppendRequest
		for i := range n {
			idx := first + uint64(i)
			req.Entries = append(req.Entries, oplog.AppendEntry{Index: idx, Kind: fmt.Sprintf("kind-%d", idx%5), Payload: payload(worker, idx)})
		}
		body, err := json.Marshal(req)
		require.NoError(t, err)
		resp, err := client.Post(url+"/v1/workers/"+worker+"/oplog", "application/json", bytes.NewReader(body))
		if !assert.NoError(t, err) {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			worker := fmt.Sprintf("reuse-%d", c)
			next := uint64(1)
			for r := range requests {
				n := 1 + (r*13+c)%60
				if r%9 == 4 { // a gap: refused, and its memory reused all the same
					assert.Equal(t, http.StatusConflict, post(worker, next+5, n))
				}
				if assert.Equal(t, http.StatusOK, post(worker, next, n)) {
					next += uint64(n)
				}
			}
		})
	}
	wg.Wait()
	for c := range clients {
		worker := fmt.Sprintf("reuse-%d", c)
		at, err := j.Head(context.Background(), worker)
		require.NoError(t, err)
		want := uint64(1)
		for {
			got, next, err := j.Read(context.Background(), worker, at, 1000, 1<<20)
			require.NoError(t, err)
			if len(got) == 0 {
				break
			}
			for _, e := range got {
				require.Equal(t, want, e.Index)
				require.Equal(t, fmt.Sprintf("kind-%d", e.Index%5), e.Kind)
				require.True(t, bytes.Equal(payload(worker, e.Index), e.Payload), "%s entry %d: payload differs from what was sent", worker, e.Index)
				want++
			}
			at = next
		}
		assert.Greater(t, want, uint64(requests), "%s: its entries were read", worker)
	}
}
