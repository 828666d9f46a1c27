package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/oplog"
)

// procStat reads a process's open descriptors and peak RSS (VmHWM).
func procStat(t *testing.T, pid int) (fds int, peakRSS int64) {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			peakRSS = kb << 10
		}
	}
	return len(ents), peakRSS
}

// statuses collects the status of every request the attackers made, by
// attack.
type statuses struct {
	mu  sync.Mutex
	got map[string]map[int]int
}

func (s *statuses) add(attack string, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got[attack] == nil {
		s.got[attack] = map[int]int{}
	}
	s.got[attack][code]++
}

// TestHostileClients runs every kind of hostile and careless client at
// once against a real runner: headers sent a byte at a time, bodies sent a
// little at a time, bodies announced and never sent, chunked bodies past
// --max-body, thousands of new worker IDs, concurrent 30 MB appends. The
// runner answers /healthz throughout within a second, every request ends
// with a status from its expected set, and its descriptors and peak RSS
// stay within the bounds its flags set.
func TestHostileClients(t *testing.T) {
	if testing.Short() {
		t.Skip("twenty seconds of attack")
	}
	t.Parallel()
	const (
		budget     = 256 << 20
		maxBody    = 8 << 20
		maxOpen    = 64
		workers    = 3000
		announcers = 100
		slowHeads  = 30
		slowBodies = 10
		bigAppends = 10
	)
	work := t.TempDir()
	d := start(t, examples, "--oplog-dir", filepath.Join(work, "oplog"), "--state-dir", filepath.Join(work, "state"),
		"--max-body", strconv.Itoa(maxBody), "--max-inflight-bytes", strconv.Itoa(budget), "--oplog-max-open", strconv.Itoa(maxOpen),
		"--read-header-timeout", "2s")
	addr := <-d.addr
	d.waitLog(t, `msg=ready`)
	pid := d.cmd.Process.Pid
	baseFDs, baseRSS := procStat(t, pid)
	base := "http://" + addr
	st := &statuses{got: map[string]map[int]int{}}
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var wg sync.WaitGroup
	done := make(chan struct{})

	// The watcher: /healthz every 50 ms, and the runner's descriptors and
	// peak RSS.
	var healthFailures atomic.Int64
	var maxFDs atomic.Int64
	var slowest atomic.Int64
	watch := func() {
		hc := &http.Client{Timeout: time.Second}
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			start := time.Now()
			resp, err := hc.Get(base + "/healthz")
			if err != nil || resp.StatusCode != http.StatusOK {
				healthFailures.Add(1)
			}
			if err == nil {
				resp.Body.Close()
			}
			if took := time.Since(start); int64(took) > slowest.Load() {
				slowest.Store(int64(took))
			}
			if fds, _ := procStat(t, pid); int64(fds) > maxFDs.Load() {
				maxFDs.Store(int64(fds))
			}
		}
	}
	wg.Go(watch)

	// Headers a byte at a time: cut off after --read-header-timeout.
	for range slowHeads {
		wg.Go(func() {
			conn, err := net.Dial("tcp", addr)
			if !assert.NoError(t, err) {
				return
			}
			defer conn.Close()
			head := "POST /v1/transform HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n"
			for i := range len(head) {
				if _, err := conn.Write([]byte{head[i]}); err != nil {
					st.add("slow headers", -1) // cut off: what the attack should get
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
			st.add("slow headers", 0)
		})
	}
	// Bodies a little at a time for five seconds, then given up.
	for range slowBodies {
		wg.Go(func() {
			conn, err := net.Dial("tcp", addr)
			if !assert.NoError(t, err) {
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /v1/transform HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n\x00asm\x01\x00\x00\x00", 4<<20)
			for range 50 {
				if _, err := conn.Write(make([]byte, 10<<10)); err != nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			st.add("slow bodies", 0)
		})
	}
	// Bodies announced and never sent, held open until the end.
	var held []net.Conn
	for range announcers {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		held = append(held, conn)
		fmt.Fprintf(conn, "POST /v1/workers/w/oplog HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 30<<20)
	}
	// Chunked bodies past --max-body: 413 (or 503 when the budget is full).
	for range 5 {
		wg.Go(func() {
			body := onlyReaderOf(bytes.NewReader(append([]byte("\x00asm\x01\x00\x00\x00"), make([]byte, maxBody+1)...)))
			resp, err := client.Post(base+"/v1/transform/wasmtag", "application/wasm", body)
			if !assert.NoError(t, err) {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			st.add("oversize chunked", resp.StatusCode)
		})
	}
	// Thousands of new worker IDs, eight clients at once.
	ids := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range ids {
				body := `{"entries":[{"index":1,"kind":"invoke","payload":"eA=="}]}`
				resp, err := client.Post(fmt.Sprintf("%s/v1/workers/id-%05d/oplog", base, i), "application/json", strings.NewReader(body))
				if !assert.NoError(t, err) {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				st.add("new worker IDs", resp.StatusCode)
			}
		})
	}
	wg.Go(func() {
		for i := range workers {
			ids <- i
		}
		close(ids)
	})
	// Ten 30 MB appends at once: as many as the budget holds get 200, the
	// rest 503.
	big := bigAppend(t, 30<<20)
	for i := range bigAppends {
		wg.Go(func() {
			resp, err := client.Post(fmt.Sprintf("%s/v1/workers/big-%d/oplog", base, i), "application/json", bytes.NewReader(big))
			if !assert.NoError(t, err) {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			st.add("30 MB appends", resp.StatusCode)
		})
	}

	// Wait for the attackers (the watcher ends with done).
	finished := make(chan struct{})
	go func() {
		for {
			st.mu.Lock()
			n := 0
			for _, codes := range st.got {
				for _, c := range codes {
					n += c
				}
			}
			st.mu.Unlock()
			if n == slowHeads+slowBodies+5+workers+bigAppends {
				close(finished)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	select {
	case <-finished:
	case <-time.After(3 * time.Minute):
		t.Errorf("the attackers did not finish: %v", st.got)
	}
	for _, c := range held {
		c.Close()
	}
	close(done)
	wg.Wait()
	client.CloseIdleConnections()
	// The runner closes a connection once it reads the client's end: give
	// it a few seconds to see them all.
	fds, peak := procStat(t, pid)
	for deadline := time.Now().Add(10 * time.Second); fds > baseFDs+maxOpen+16 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		fds, peak = procStat(t, pid)
	}
	t.Logf("statuses by attack: %v", st.got)
	t.Logf("runner: %d descriptors at start, at most %d under attack, %d after; peak RSS %d MiB (%d MiB at start); slowest /healthz %s",
		baseFDs, maxFDs.Load(), fds, peak>>20, baseRSS>>20, time.Duration(slowest.Load()))

	assert.Zero(t, healthFailures.Load(), "/healthz answered 200 within a second throughout")
	allowed := map[string][]int{
		"slow headers":     {-1},
		"slow bodies":      {0},
		"oversize chunked": {http.StatusRequestEntityTooLarge, http.StatusServiceUnavailable},
		"new worker IDs":   {http.StatusOK},
		"30 MB appends":    {http.StatusOK, http.StatusServiceUnavailable},
	}
	for attack, codes := range st.got {
		for code := range codes {
			assert.Contains(t, allowed[attack], code, "%s ended with %d", attack, code)
		}
	}
	assert.Equal(t, workers, st.got["new worker IDs"][http.StatusOK])
	assert.Positive(t, st.got["30 MB appends"][http.StatusOK], "the budget admits some 30 MB appends")
	// Descriptors: the connections the attack holds at most, the oplogs
	// the appender keeps open, a delivery's slots, and the runner's own.
	conns := slowHeads + slowBodies + announcers + 8 + 5 + bigAppends + 1
	assert.LessOrEqual(t, maxFDs.Load(), int64(baseFDs+conns+maxOpen+16), "descriptors bounded")
	assert.LessOrEqual(t, fds, baseFDs+maxOpen+16, "descriptors given back once the clients are gone")
	// Memory: the start's, and the budget with the garbage collector's
	// slack: what the budget charges is live, and the heap may hold up to
	// as much again of garbage before a collection (GOGC=100); half of it
	// is the bound seen here (peak about 300 MiB for 256 MiB).
	assert.LessOrEqual(t, peak, baseRSS+budget*3/2, "peak RSS within the budget")

	// The runner still serves, and stops cleanly.
	var st2 oplog.Status
	require.Equal(t, http.StatusOK, getJSON(t, base+"/v1/oplog", &st2))
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, d.exitCode(t), d.text())
}

// onlyReaderOf hides the length of r: net/http sends it chunked.
func onlyReaderOf(r io.Reader) io.Reader { return struct{ io.Reader }{r} }

// bigAppend is an append request of about size bytes of JSON for a new
// worker.
func bigAppend(t *testing.T, size int) []byte {
	t.Helper()
	var req oplog.AppendRequest
	payload := bytes.Repeat([]byte("p"), 1<<20)
	for i := 1; i*(4<<20)/3 < size; i++ {
		req.Entries = append(req.Entries, oplog.AppendEntry{Index: uint64(i), Kind: "invoke", Payload: payload})
	}
	b, err := json.Marshal(req)
	require.NoError(t, err)
	return b
}
