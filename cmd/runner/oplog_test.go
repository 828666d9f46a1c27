package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/natsjournal/natstest"
)

// writeOplogs writes n entries for each of workers worker-000... into dir.
func writeOplogs(t *testing.T, dir string, workers, n int) {
	t.Helper()
	payload := []byte("0123456789abcdef")
	for w := range workers {
		id := fmt.Sprintf("worker-%03d", w)
		wr, err := oplog.OpenWriter(dir, id)
		require.NoError(t, err)
		batch := make([]contract.Entry, 0, 1000)
		for i := 1; i <= n; i++ {
			batch = append(batch, contract.Entry{Index: uint64(i), Timestamp: time.Unix(int64(i), 0), Kind: "invoke", Payload: payload})
			if len(batch) == cap(batch) || i == n {
				require.NoError(t, wr.Append(batch...))
				batch = batch[:0]
			}
		}
		require.NoError(t, wr.Close())
	}
}

// oplogStatus reads GET /v1/oplog.
func oplogStatus(t *testing.T, addr string) oplog.Status {
	t.Helper()
	var st oplog.Status
	require.Equal(t, http.StatusOK, getJSON(t, "http://"+addr+"/v1/oplog", &st))
	return st
}

// TestOplogCrashes: a runner delivering 1,000,000 entries of 100 workers,
// while 8 at-least-once HTTP senders append to 8 more workers and resend
// (until answered, and acknowledged batches now and then), is killed with
// SIGKILL at random moments 20 times and started again; then one run
// finishes. The processor (the oplogrecorder fixture) must have seen every
// index of every worker, every acknowledged one of the senders', any index
// more than once only with Batch.Redelivery set, and none that was never
// acknowledged.
func TestOplogCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of crashes")
	}
	const workers, perWorker, kills = 100, 10_000, 20
	work := t.TempDir()
	oplogDir, state, seen := filepath.Join(work, "oplog"), filepath.Join(work, "state"), filepath.Join(work, "seen.log")
	writeOplogs(t, oplogDir, workers, perWorker)
	dir := copyPlugins(t, "oplogrecorder=recorder_v1.0.0.so")
	conf := filepath.Join(work, "plugins.toml")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("[plugins.recorder.config]\nfile = %q\n", seen)), 0o644))
	// Batches of 100: ten thousand cursor writes, so that the kills land
	// all through the delivery.
	flags := []string{"--config", conf, "--oplog-dir", oplogDir, "--state-dir", state, "--quarantine-after", "1000", "--oplog-batch", "100"}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var progress []int
	midway := 0
	feed := newFeeder(8, 10)
	feeding := func(d *daemonProc) (stop func()) {
		done, quit := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			select {
			case addr := <-d.addr:
				feed.run(addr, quit, 0)
			case <-d.done:
			}
		}()
		return func() { close(quit); <-done }
	}
	for i := range kills {
		d := start(t, dir, flags...)
		stopFeed := feeding(d)
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond) // while selecting, or delivering
		require.NoError(t, d.cmd.Process.Signal(syscall.SIGKILL))
		stopFeed()
		code := d.exitCode(t)
		require.Equal(t, -int(syscall.SIGKILL), code, "run %d:\n%s", i, d.text())
		progress = append(progress, countLines(t, seen))
		if n := progress[len(progress)-1]; n > 0 && n < workers*perWorker {
			midway++
		}
	}
	lines := countLines(t, seen)
	t.Logf("entries the processor had seen after each kill: %v", progress)

	d := start(t, dir, flags...)
	addr := <-d.addr
	feed.mu.Lock()
	until := uint64(0)
	for _, w := range feed.workers {
		until = max(until, feed.acked[w]+uint64(feed.batch))
	}
	feed.mu.Unlock()
	feed.run(addr, nil, until) // every sender's batch in hand is acknowledged, and one more
	deadline := time.Now().Add(3 * time.Minute)
	for {
		st := oplogStatus(t, addr)
		done := 0
		if len(st.Processors) == 1 {
			for _, w := range st.Processors[0].Workers {
				if w.Acked == perWorker || (strings.HasPrefix(w.Worker, "http-") && w.Acked == feed.acked[w.Worker]) {
					done++
				}
			}
		}
		if done == workers+len(feed.workers) {
			break
		}
		require.True(t, time.Now().Before(deadline), "%d of %d workers finished:\n%s", done, workers, d.text())
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, d.exitCode(t), d.text())

	rec := readRecorder(t, seen)
	plain, flagged := rec.plain, rec.flagged
	t.Logf("%d frames torn by a kill, ignored", rec.torn)
	missing, twice, again := 0, 0, 0
	for w := range workers {
		id := fmt.Sprintf("worker-%03d", w)
		for i := uint64(1); i <= perWorker; i++ {
			n := plain[id][i]
			if n+flagged[id][i] == 0 {
				missing++
			}
			if n > 1 {
				twice++
			}
			again += max(0, n+flagged[id][i]-1)
		}
	}
	t.Logf("%d deliveries of %d entries: %d flagged as redeliveries, of which %d had been delivered before",
		rec.total, workers*perWorker, rec.redelivered, again)
	assert.Zero(t, missing, "entries never delivered")
	assert.Zero(t, twice, "entries delivered twice without the redelivery flag")
	assert.Positive(t, lines)
	assert.GreaterOrEqual(t, midway, kills/4, "kills that landed while delivering")
	feed.check(t, rec)
	t.Logf("senders: %v acknowledged, %d acknowledged batches resent", feed.acked, feed.resent)
}

// countLines counts the entries in the oplogrecorder's complete frames.
func countLines(t *testing.T, path string) int {
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return 0
	}
	return readRecorder(t, path).total
}

// recorded is what the oplogrecorder fixture wrote: the deliveries of each
// worker's indexes, unflagged and flagged as redeliveries, from its
// complete frames, and how many frames a kill tore (their entries do not
// count: the processor never acknowledged them).
type recorded struct {
	plain, flagged     map[string]map[uint64]int
	order              map[string][]uint64 // each worker's unflagged indexes, as delivered
	total, redelivered int
	torn               int
}

// readRecorder parses the oplogrecorder's file. A frame is "B <n>", n
// entry lines, "E <crc>"; anything else ends the frame as torn and is
// skipped up to the next "B" line.
func readRecorder(t *testing.T, path string) recorded {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	rec := recorded{plain: map[string]map[uint64]int{}, flagged: map[string]map[uint64]int{}, order: map[string][]uint64{}}
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); {
		n, ok := frameStart(lines[i])
		if !ok {
			if lines[i] != "" {
				rec.torn++ // the start of a frame torn before its "B" line ended
			}
			i++
			continue
		}
		body := lines[i+1 : min(i+1+n, len(lines))]
		end := i + 1 + n
		var text strings.Builder
		good := len(body) == n && end < len(lines)
		for _, l := range body {
			if _, ok := frameStart(l); ok || len(strings.Fields(l)) != 3 {
				good = false
				break
			}
			text.WriteString(l + "\n")
		}
		if !good || lines[end] != fmt.Sprintf("E %08x", crc32.ChecksumIEEE([]byte(text.String()))) {
			rec.torn++
			i++ // resynchronise at the next "B" line
			for i < len(lines) {
				if _, ok := frameStart(lines[i]); ok {
					break
				}
				i++
			}
			continue
		}
		for _, l := range body {
			parts := strings.Fields(l)
			idx, err := strconv.ParseUint(parts[1], 10, 64)
			require.NoError(t, err, "line %q", l)
			m := rec.plain
			if parts[2] == "R" {
				m = rec.flagged
				rec.redelivered++
			} else {
				rec.order[parts[0]] = append(rec.order[parts[0]], idx)
			}
			if m[parts[0]] == nil {
				m[parts[0]] = map[uint64]int{}
			}
			m[parts[0]][idx]++
			rec.total++
		}
		i = end + 1
	}
	return rec
}

func frameStart(line string) (int, bool) {
	v, ok := strings.CutPrefix(line, "B ")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 0
}

// TestOplogHTTPAndControl: entries appended over HTTP reach the
// processor; deactivate pauses the worker over the control socket, the
// cursor holds, and activate lets it catch up.
func TestOplogHTTPAndControl(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	oplogDir, state, seen := filepath.Join(work, "oplog"), filepath.Join(work, "state"), filepath.Join(work, "seen.log")
	dir := copyPlugins(t, "oplogrecorder=recorder_v1.0.0.so")
	conf := filepath.Join(work, "plugins.toml")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("[plugins.recorder.config]\nfile = %q\n", seen)), 0o644))
	d := start(t, dir, "--config", conf, "--oplog-dir", oplogDir, "--state-dir", state)
	addr := <-d.addr
	d.waitLog(t, `msg=ready`)

	post := func(worker string, first, n int) (int, oplog.ErrorResponse) {
		var req oplog.AppendRequest
		for i := range n {
			req.Entries = append(req.Entries, oplog.AppendEntry{Index: uint64(first + i), Kind: "invoke", Payload: []byte("p")})
		}
		body, _ := json.Marshal(req)
		resp, err := http.Post("http://"+addr+"/v1/workers/"+worker+"/oplog", "application/json", bytes.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		var e oplog.ErrorResponse
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}
	code, _ := post("w1", 1, 10)
	require.Equal(t, http.StatusOK, code)
	code, e := post("w1", 5, 1)
	assert.Equal(t, http.StatusOK, code, "an identical resend: %s", e.Error)
	code, e = post("w1", 13, 1)
	assert.Equal(t, http.StatusConflict, code)
	assert.EqualValues(t, 11, e.ExpectedIndex)
	code, e = post("-x", 1, 1)
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, e.Error, "invalid worker ID")

	acked := func() uint64 {
		for _, w := range oplogStatus(t, addr).Processors[0].Workers {
			if w.Worker == "w1" {
				return w.Acked
			}
		}
		return 0
	}
	eventually(t, func() bool { return acked() == 10 })

	rc, out, errOut := runner(t, "oplog", "deactivate", "--state-dir", state, "w1")
	require.Equal(t, exitcode.OK, rc, errOut)
	assert.Contains(t, out, "w1: delivery paused")
	code, _ = post("w1", 11, 5)
	require.Equal(t, http.StatusOK, code)
	time.Sleep(300 * time.Millisecond)
	assert.EqualValues(t, 10, acked(), "the cursor holds while paused")

	rc, out, _ = runner(t, "oplog", "status", "--state-dir", state)
	require.Equal(t, exitcode.OK, rc)
	assert.Contains(t, out, `"paused": [
    "w1"
  ]`)
	rc, _, _ = runner(t, "oplog", "activate", "--state-dir", state, "w1")
	require.Equal(t, exitcode.OK, rc)
	eventually(t, func() bool { return acked() == 15 })
	assert.Equal(t, 15, countLines(t, seen))

	rc, _, errOut = runner(t, "oplog", "status", "--control-socket", filepath.Join(work, "nosuch.sock"))
	assert.Equal(t, exitcode.NoInput, rc)
	assert.Contains(t, errOut, "the daemon is not reachable")
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "timed out")
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOplogOnNATS: with --oplog-nats the daemon appends to and delivers
// from JetStream (a real nats-server): entries appended over HTTP to
// workers whose IDs differ only by '.' and '_' reach the processor, each
// once; a resend is answered as before; a second daemon on the same
// stream sees the same journals.
func TestOplogOnNATS(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	work := t.TempDir()
	state, seen := filepath.Join(work, "state"), filepath.Join(work, "seen.log")
	dir := copyPlugins(t, "oplogrecorder=recorder_v1.0.0.so")
	conf := filepath.Join(work, "plugins.toml")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("[plugins.recorder.config]\nfile = %q\n", seen)), 0o644))
	d := start(t, dir, "--config", conf, "--oplog-nats", srv.URL, "--oplog-nats-replicas", "1", "--state-dir", state)
	addr := <-d.addr
	d.waitLog(t, `msg=ready`)
	d.waitLog(t, `msg="oplog on NATS JetStream"`)

	post := func(worker string, first, n int) int {
		var req oplog.AppendRequest
		for i := range n {
			req.Entries = append(req.Entries, oplog.AppendEntry{Index: uint64(first + i), Kind: "invoke", Payload: []byte(worker)})
		}
		body, _ := json.Marshal(req)
		resp, err := http.Post("http://"+addr+"/v1/workers/"+worker+"/oplog", "application/json", bytes.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, post("w.1", 1, 10))
	require.Equal(t, http.StatusOK, post("w_1", 1, 5))
	require.Equal(t, http.StatusOK, post("w.1", 1, 12), "a resend that extends")
	require.Equal(t, http.StatusConflict, post("w_1", 9, 1), "a gap")
	acked := func(worker string) uint64 {
		for _, w := range oplogStatus(t, addr).Processors[0].Workers {
			if w.Worker == worker {
				return w.Acked
			}
		}
		return 0
	}
	eventually(t, func() bool { return acked("w.1") == 12 && acked("w_1") == 5 })
	assert.Equal(t, 17, countLines(t, seen))
	assert.Equal(t, "ok", oplogStatus(t, addr).Journal)

	// A pause is kept in the journal's bucket, for every runner on it.
	rc, out, errOut := runner(t, "oplog", "deactivate", "--state-dir", state, "w.1")
	require.Equal(t, exitcode.OK, rc, errOut)
	assert.Contains(t, out, "w.1: delivery paused")
	assert.Equal(t, []string{"w.1"}, oplogStatus(t, addr).Paused)
	rc, _, errOut = runner(t, "oplog", "activate", "--state-dir", state, "w.1")
	require.Equal(t, exitcode.OK, rc, errOut)
	assert.Empty(t, oplogStatus(t, addr).Paused)

	// The server gone: an append is refused with 503 and Retry-After,
	// in bounded time, and the status says the journal is degraded.
	srv.Kill()
	var req oplog.AppendRequest
	req.Entries = []oplog.AppendEntry{{Index: 13, Kind: "invoke", Payload: []byte("p")}}
	body, _ := json.Marshal(req)
	started := time.Now()
	resp, err := http.Post("http://"+addr+"/v1/workers/w.1/oplog", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	assert.Less(t, time.Since(started), 30*time.Second)
	assert.Contains(t, oplogStatus(t, addr).Journal, "degraded: ")
}

// TestOplogMigrate: "runner oplog migrate" copies a folder's journals and
// cursors to JetStream, says how many entries it verified per worker, and
// run again copies nothing; usage errors name what is missing.
func TestOplogMigrate(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	dir := filepath.Join(t.TempDir(), "oplog")
	for _, w := range []string{"a.b", "a_b"} {
		wr, err := oplog.OpenWriter(dir, w)
		require.NoError(t, err)
		es := make([]contract.Entry, 30)
		for i := range es {
			es[i] = contract.Entry{Index: uint64(i + 1), Timestamp: time.Now(), Kind: "k", Payload: []byte(w)}
		}
		require.NoError(t, wr.Append(es...))
		require.NoError(t, wr.Close())
	}
	require.NoError(t, os.MkdirAll(filepath.Join(dir, ".cursors", "kindcount"), 0o755))
	for i, want := range []string{"(30 copied now)", "(0 copied now)"} {
		rc, out, errOut := runner(t, "oplog", "migrate", "--from", dir, "--to", srv.URL, "--oplog-nats-replicas", "1")
		require.Equal(t, exitcode.OK, rc, errOut)
		assert.Contains(t, out, "a.b: 30 entries verified "+want, "run %d", i)
		assert.Contains(t, out, "a_b: 30 entries verified "+want, "run %d", i)
		assert.Contains(t, out, "2 workers, 60 entries verified")
	}
	rc, out, _ := runner(t, "oplog", "migrate", "--from", dir, "--to", srv.URL, "--oplog-nats-replicas", "1", "--json")
	require.Equal(t, exitcode.OK, rc)
	assert.Contains(t, out, `"verified": 60`)
	rc, _, errOut := runner(t, "oplog", "migrate", "--from", dir)
	assert.Equal(t, exitcode.Usage, rc)
	assert.Contains(t, errOut, "usage: runner oplog migrate")
	rc, _, errOut = runner(t, "oplog", "migrate", "--from", filepath.Join(dir, "nope"), "--to", srv.URL)
	assert.Equal(t, exitcode.NoInput, rc)
	assert.Contains(t, errOut, "nope")
}
