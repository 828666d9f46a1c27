package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
)

// appendPayload is the payload of each appended entry.
const appendPayload = 256

// appendShape is one durable-append measurement: clients send requests
// of perRequest entries of payloadSize bytes, spread round-robin over
// workers (client c appends to workers c, c+clients, ...).
type appendShape struct {
	clients, workers, requests, perRequest int
}

// appendResult is what one way of appending achieved.
type appendResult struct {
	mode    string
	entries int
	took    time.Duration
}

func (r appendResult) rate() float64 { return float64(r.entries) / r.took.Seconds() }

// appendBench measures the shape four ways, each on a fresh folder under
// parent: the in-process Writer (one per worker, held open, one fsync per
// append), and HTTP appends to a server process, with the daemon's
// default sync mode (group commit across workers on a local file system),
// with SyncFile, and with one sync per append.
func appendBench(parent string, s appendShape) error {
	if s.requests < s.workers {
		s.requests = s.workers
	}
	payload := bytes.Repeat([]byte{'p'}, appendPayload)
	var results []appendResult
	for _, mode := range []string{"writer", "http", "http-file", "http-each-append"} {
		dir, err := os.MkdirTemp(parent, "oplogbench-append-")
		if err != nil {
			return err
		}
		var r appendResult
		switch mode {
		case "writer":
			r, err = appendWriters(dir, s, payload)
		case "http":
			r, err = appendHTTP(dir, s, payload, oplog.SyncAuto)
		case "http-file":
			r, err = appendHTTP(dir, s, payload, oplog.SyncFile)
		default:
			r, err = appendHTTP(dir, s, payload, oplog.SyncEachAppend)
		}
		os.RemoveAll(dir)
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		r.mode = mode
		results = append(results, r)
		fmt.Printf("append mode=%s clients=%d workers=%d entries=%d entry_bytes=%d seconds=%.3f entries_per_second=%.0f\n",
			mode, s.clients, s.workers, r.entries, appendPayload, r.took.Seconds(), r.rate())
	}
	w, h, file, each := results[0].rate(), results[1].rate(), results[2].rate(), results[3].rate()
	fmt.Printf("append clients=%d workers=%d http_over_writer=%.2f http_over_each_append=%.2f http_file_over_each_append=%.2f\n",
		s.clients, s.workers, h/w, h/each, file/each)
	return nil
}

// plan calls fn(client, worker, k) for each of client's requests, k
// counting them from 0, in order.
func (s appendShape) plan(client int, fn func(worker, k int) error) error {
	mine := []int{}
	for w := client; w < s.workers; w += s.clients {
		mine = append(mine, w)
	}
	if len(mine) == 0 {
		return nil
	}
	n := s.requests / s.clients
	if client < s.requests%s.clients {
		n++
	}
	for k := range n {
		if err := fn(mine[k%len(mine)], k/len(mine)); err != nil {
			return err
		}
	}
	return nil
}

// run runs the clients and returns how long they took and how many
// entries they appended.
func (s appendShape) run(client func(c int) (int, error)) (int, time.Duration, error) {
	var wg sync.WaitGroup
	counts := make([]int, s.clients)
	errs := make([]error, s.clients)
	start := time.Now()
	for c := range s.clients {
		wg.Go(func() { counts[c], errs[c] = client(c) })
	}
	wg.Wait()
	took := time.Since(start)
	total := 0
	for _, n := range counts {
		total += n
	}
	return total, took, errors.Join(errs...)
}

func workerName(w int) string { return "w" + strconv.Itoa(w) }

// appendWriters appends through Writers in this process, one per worker.
func appendWriters(dir string, s appendShape, payload []byte) (appendResult, error) {
	writers := make([]*oplog.Writer, s.workers)
	defer func() {
		for _, w := range writers {
			if w != nil {
				w.Close()
			}
		}
	}()
	for i := range writers { // opened before the clock starts, as the HTTP journals are made
		w, err := oplog.OpenWriter(dir, workerName(i))
		if err != nil {
			return appendResult{}, err
		}
		writers[i] = w
	}
	now := time.Now().UTC()
	n, took, err := s.run(func(c int) (int, error) {
		sent := 0
		es := make([]contract.Entry, s.perRequest)
		err := s.plan(c, func(worker, k int) error {
			first := uint64(k*s.perRequest) + 1
			for i := range es {
				es[i] = contract.Entry{Index: first + uint64(i), Timestamp: now, Kind: "invoke", Payload: payload}
			}
			sent += len(es)
			return writers[worker].Append(es...)
		})
		return sent, err
	})
	return appendResult{entries: n, took: took}, err
}

// appendHTTP appends through the daemon's HTTP appender in a server
// process of its own (serve), over loopback TCP.
func appendHTTP(dir string, s appendShape, payload []byte, mode oplog.SyncMode) (appendResult, error) {
	for i := range s.workers { // the oplogs exist before the clock starts, as the Writers' do
		w, err := oplog.OpenWriter(dir, workerName(i))
		if err != nil {
			return appendResult{}, err
		}
		w.Close()
	}
	srv, err := startServer(dir, serverFlags{sync: mode})
	if err != nil {
		return appendResult{}, err
	}
	defer srv.stop()
	return s.postAll(srv, payload)
}

// postAll sends the shape's requests to srv's appender from its clients,
// each entry's payload payload, and returns what they appended and how
// long it took.
func (s appendShape) postAll(srv *server, payload []byte) (appendResult, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: s.clients}, Timeout: time.Minute}
	b64 := []byte(base64.StdEncoding.EncodeToString(payload))
	n, took, err := s.run(func(c int) (int, error) {
		sent := 0
		var body []byte
		err := s.plan(c, func(worker, k int) error {
			body = appendRequest(body[:0], uint64(k*s.perRequest)+1, s.perRequest, b64)
			code, msg, err := post(client, srv.url+workerName(worker)+"/oplog", body)
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("append to %s: %d: %s", workerName(worker), code, msg)
			}
			sent += s.perRequest
			return nil
		})
		return sent, err
	})
	return appendResult{entries: n, took: took}, err
}

// post sends body and returns the status and the answer.
func post(client *http.Client, url string, body []byte) (int, []byte, error) {
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(resp.Body)
	return resp.StatusCode, msg, err
}

// appendRequest appends to body an append request of n entries from index
// first, each of kind "invoke" with the payload b64.
func appendRequest(body []byte, first uint64, n int, b64 []byte) []byte {
	body = append(body, `{"entries":[`...)
	for i := range n {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, `{"index":`...)
		body = strconv.AppendUint(body, first+uint64(i), 10)
		body = append(body, `,"kind":"invoke","payload":"`...)
		body = append(body, b64...)
		body = append(body, `"}`...)
	}
	return append(body, "]}"...)
}
