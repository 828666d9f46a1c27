package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/natsjournal/natstest"
)

// benchT is natstest's T for a program: a failure ends it.
type benchT struct {
	dir      string
	cleanups []func()
}

func (*benchT) Helper() {}
func (b *benchT) Fatalf(format string, args ...any) {
	b.done()
	fmt.Fprintf(os.Stderr, "oplogbench: "+format+"\n", args...)
	os.Exit(1)
}
func (b *benchT) TempDir() string {
	d, err := os.MkdirTemp(b.dir, "nats-")
	if err != nil {
		b.Fatalf("%v", err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}
func (b *benchT) Cleanup(f func()) { b.cleanups = append(b.cleanups, f) }
func (b *benchT) done() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
}

// natsBench measures, on a local nats-server (replicas 1) or three-node
// cluster (3), durable HTTP appends of 100 entries of 256 B from 64
// clients to 64 workers through the daemon's appender on the JetStream
// journal, and bare nats.go async publishes of the same records to the
// same stream.
func natsBench(dir string, replicas, clients, requests int) error {
	bt := &benchT{dir: dir}
	defer bt.done()
	var urls string
	if replicas == 1 {
		urls = natstest.Start(bt).URL
	} else {
		urls = natstest.StartCluster(bt, replicas).URLs()
	}
	srv, err := startServer(dir, serverFlags{nats: urls, replicas: replicas})
	if err != nil {
		return err
	}
	defer srv.stop()
	s := appendShape{clients: clients, workers: clients, requests: requests, perRequest: 100}
	payload := bytes.Repeat([]byte{'p'}, appendPayload)
	r, err := s.postAll(srv, payload)
	if err != nil {
		return err
	}
	n := r.entries
	httpRate := r.rate()

	// Bare: the same records, one message per request, published async.
	nc, err := nats.Connect(urls)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		return err
	}
	es := make([]contract.Entry, 100)
	now := time.Now().UTC()
	for i := range es {
		es[i] = contract.Entry{Index: uint64(i + 1), Timestamp: now, Kind: "invoke", Payload: payload}
	}
	data := oplog.AppendRecords(nil, es)
	start := time.Now()
	for i := range requests {
		if _, err := js.PublishAsync("soplug.oplog.bare"+strconv.Itoa(i%clients), data); err != nil {
			return err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return fmt.Errorf("bare publishes not acknowledged within a minute")
	}
	bareTook := time.Since(start)
	bareRate := float64(requests*100) / bareTook.Seconds()
	fmt.Printf("nats replicas=%d clients=%d entries=%d entry_bytes=%d http_entries_per_second=%.0f bare_async_entries_per_second=%.0f http_over_bare=%.2f\n",
		replicas, clients, n, appendPayload, httpRate, bareRate, httpRate/bareRate)
	return nil
}
