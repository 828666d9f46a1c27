package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soplug/soplug/internal/inflight"
	"github.com/soplug/soplug/internal/oplog"
)

// memShape is a body of the largest size an append may have.
type memShape struct {
	name    string
	entries int // per body
}

// memBench sends, from clients at once, rounds bodies each of the
// largest size (oplog.DefaultMaxAppendBytes) to a server process with a
// budget of budget bytes, retrying each 503, and samples the server's
// resident memory: its peak against the budget plus
// inflight.MemoryHeadroom.
func memBench(dir string, budget int64, clients, rounds int) error {
	for _, shape := range []memShape{
		{"payloads", 128},                       // 128 payloads of about 190 KiB
		{"entries", oplog.MaxAppendEntries - 1}, // the most entries, of about 380 bytes
	} {
		if err := memRun(dir, budget, clients, rounds, shape); err != nil {
			return fmt.Errorf("%s: %w", shape.name, err)
		}
	}
	return nil
}

// largestBody builds a body of about max bytes of n entries from index
// first, all payloads alike.
func largestBody(max int64, n int, first uint64) []byte {
	per := int(max)/n - len(`{"index":18446744073709551615,"kind":"invoke","payload":""},`)
	per = per / 4 * 4
	b64 := bytes.Repeat([]byte("QUFB"), per/4)
	return appendRequest(make([]byte, 0, max), first, n, b64)
}

func memRun(parent string, budget int64, clients, rounds int, shape memShape) error {
	dir, err := os.MkdirTemp(parent, "oplogbench-mem-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := startServer(dir, serverFlags{budget: budget})
	if err != nil {
		return err
	}
	defer srv.stop()
	status := fmt.Sprintf("/proc/%d/status", srv.pid())
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 5 * time.Minute}
	// Warm up: the server has served one append before it is measured.
	if code, msg, err := post(client, srv.url+"warm/oplog", []byte(`{"entries":[{"index":1}]}`)); err != nil || code != http.StatusOK {
		return fmt.Errorf("warm-up: %d %s %v", code, msg, err)
	}
	time.Sleep(200 * time.Millisecond)
	base := statusField(status, "VmRSS:")
	// Each client's bodies, built before the clock starts.
	bodies := make([][]byte, clients)
	for c := range bodies {
		bodies[c] = largestBody(oplog.DefaultMaxAppendBytes-1024, shape.entries, 1)
	}
	var peak atomic.Int64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if v := statusField(status, "VmRSS:"); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	var refused, admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, clients)
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			worker := "m" + strconv.Itoa(c)
			for r := range rounds {
				body := bodies[c]
				if r > 0 { // the next indexes: rewrite the body for them
					body = largestBody(oplog.DefaultMaxAppendBytes-1024, shape.entries, uint64(r*shape.entries+1))
				}
				for {
					code, msg, err := post(client, srv.url+worker+"/oplog", body)
					if err != nil {
						errs[c] = err
						return
					}
					if code == http.StatusServiceUnavailable {
						refused.Add(1)
						time.Sleep(20 * time.Millisecond)
						continue
					}
					if code != http.StatusOK {
						errs[c] = fmt.Errorf("%d: %s", code, msg)
						return
					}
					admitted.Add(1)
					break
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(done)
	<-sampled
	hwm := statusField(status, "VmHWM:")
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	bound := (budget + inflight.MemoryHeadroom) >> 10
	fmt.Printf("memory shape=%s clients=%d body_bytes=%d budget_mib=%d appends=%d refused_503=%d seconds=%.2f base_rss_mib=%.0f peak_rss_mib=%.0f hwm_mib=%.0f bound_mib=%d within=%v\n",
		shape.name, clients, len(bodies[0]), budget>>20, admitted.Load(), refused.Load(), took.Seconds(),
		float64(base)/1024, float64(peak.Load())/1024, float64(hwm)/1024, bound>>10, max(peak.Load(), hwm) <= bound)
	return nil
}

// statusField reads a field of a /proc status file, in KiB.
func statusField(path, field string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if bytes.HasPrefix(line, []byte(field)) {
			f := bytes.Fields(line[len(field):])
			if len(f) > 0 {
				v, _ := strconv.ParseInt(string(f[0]), 10, 64)
				return v
			}
		}
	}
	return 0
}
