package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/natsjournal/natstest"
)

// TestOplogFleet: three runners on a three-node cluster (three replicas)
// share forty workers that clients append to through all three; one
// runner is killed with SIGKILL in the middle of it. The recorder plugin
// (one file for all three runners) must have seen every entry, and any
// entry twice only with Batch.Redelivery set.
func TestOplogFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster and three runners")
	}
	cl := natstest.StartCluster(t, 3)
	work := t.TempDir()
	seen := filepath.Join(work, "seen.log")
	dir := copyPlugins(t, "oplogrecorder=recorder_v1.0.0.so")
	conf := filepath.Join(work, "plugins.toml")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("[plugins.recorder.config]\nfile = %q\n", seen)), 0o644))
	var runners []*daemonProc
	var addrs []string
	for i := range 3 {
		d := start(t, dir, "--config", conf, "--state-dir", filepath.Join(work, fmt.Sprint("state", i)),
			"--oplog-nats", cl.URLs(), "--oplog-nats-replicas", "3", "--oplog-nats-lease", "1s", "--oplog-batch", "20",
			"--quarantine-after", "1000")
		addrs = append(addrs, <-d.addr)
		d.waitLog(t, `msg=ready`)
		runners = append(runners, d)
	}

	const workers, batches, per = 40, 10, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			worker := fmt.Sprintf("f.%d", w)
			for b := range batches {
				var req oplog.AppendRequest
				for i := range per {
					req.Entries = append(req.Entries, oplog.AppendEntry{Index: uint64(b*per + i + 1), Kind: "invoke", Payload: []byte("p")})
				}
				body, _ := json.Marshal(req)
				for try := 0; ; try++ { // through each runner in turn; resent until answered
					addr := addrs[(w+b+try)%3]
					if try > 0 && addr == addrs[1] {
						continue // the killed runner
					}
					resp, err := http.Post("http://"+addr+"/v1/workers/"+worker+"/oplog", "application/json", bytes.NewReader(body))
					last := fmt.Sprint(err)
					if err == nil {
						msg, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode == http.StatusOK {
							break
						}
						last = fmt.Sprintf("%d %s", resp.StatusCode, msg)
					}
					if !assert.Less(t, try, 200, "append %s batch %d: %s", worker, b, last) {
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				if w == 0 && b == batches/2 { // midway: a runner dies
					require.NoError(t, runners[1].cmd.Process.Signal(syscall.SIGKILL))
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		rec := readRecorder(t, seen)
		missing := 0
		for w := range workers {
			id := fmt.Sprintf("f.%d", w)
			for i := uint64(1); i <= batches*per; i++ {
				if rec.plain[id][i]+rec.flagged[id][i] == 0 {
					missing++
				}
			}
		}
		if missing == 0 {
			twice := 0
			for w := range workers {
				for _, n := range rec.plain[fmt.Sprintf("f.%d", w)] {
					if n > 1 {
						twice++
					}
				}
			}
			assert.Zero(t, twice, "entries delivered twice unflagged")
			t.Logf("%d deliveries of %d entries, %d flagged as redeliveries", rec.total, workers*batches*per, rec.redelivered)
			break
		}
		require.True(t, time.Now().Before(deadline), "%d entries never delivered", missing)
		time.Sleep(200 * time.Millisecond)
	}
	assert.Equal(t, -int(syscall.SIGKILL), runners[1].exitCode(t))
}
