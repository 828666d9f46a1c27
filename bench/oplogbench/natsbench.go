package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/natsjournal"
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
// cluster (3), in one run:
//   - durable HTTP appends of 100 entries of 256 B from -clients clients
//     (64) to as many workers through the daemon's appender on the
//     JetStream journal, each client waiting for its answer;
//   - bare nats.go async publishes of the same records to the same
//     stream, at most -pending (256) awaiting acknowledgement;
//   - the same HTTP appends to a journal in memory: what the HTTP front
//     end and its decoder allow on this machine, whatever the journal;
//   - delivery of what both wrote to a processor that does nothing,
//     cursors in the KV bucket;
//   - append→Process latency of single entries appended one at a time;
//   - with three replicas, the stream leader killed with SIGKILL while
//     clients append over HTTP and a bare publisher publishes: the time
//     from the kill to the first success of each.
func natsBench(dir string, replicas, clients, requests, pending int) error {
	bt := &benchT{dir: dir}
	defer bt.done()
	var urls string
	var cl *natstest.Cluster
	if replicas == 1 {
		urls = natstest.Start(bt).URL
	} else {
		cl = natstest.StartCluster(bt, replicas)
		urls = cl.URLs()
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

	nc, err := nats.Connect(urls, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	bareRate, err := barePublish(nc, requests, clients, pending, payload)
	if err != nil {
		return err
	}

	memDir, err := os.MkdirTemp(dir, "memory-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(memDir)
	mem, err := startServer(memDir, serverFlags{memory: true})
	if err != nil {
		return err
	}
	rm, err := s.postAll(mem, payload)
	mem.stop()
	if err != nil {
		return err
	}

	j, err := natsjournal.New(context.Background(), nc, natsjournal.Config{Replicas: replicas, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	p := &natsProc{arrived: make(chan time.Time, 1)}
	d, err := oplog.NewDeliverer(oplog.Config{Journal: j, Logger: j.Config().Logger}, "bench", "1.0.0", p)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- d.Run(ctx, context.Background()) }()
	backlog := int64(n + requests*100) // the HTTP appends and the bare publishes
	for p.n.Load() < backlog {
		select {
		case err := <-done:
			cancel()
			return fmt.Errorf("delivery ended: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	deliverRate := float64(backlog) / time.Since(start).Seconds()
	p50, p99, err := natsLatency(srv, p.arrived, 500)
	if err != nil { // what the deliverer knows of the worker, and what the journal holds
		for _, st := range d.Status() {
			if st.Worker == "latency" {
				err = fmt.Errorf("%w; the deliverer: %+v", err, st)
			}
		}
		if h, herr := j.Head(context.Background(), "latency"); herr == nil {
			err = fmt.Errorf("%w; the journal: %+v", err, h)
		}
	}
	cancel()
	if derr := <-done; err == nil {
		err = derr
	}
	if err != nil {
		return err
	}
	line := fmt.Sprintf("nats replicas=%d clients=%d bare_pending=%d entries=%d entry_bytes=%d http_entries_per_second=%.0f bare_async_entries_per_second=%.0f http_over_bare=%.2f memory_journal_entries_per_second=%.0f http_over_memory_journal=%.2f delivered_entries=%d deliver_entries_per_second=%.0f latency_p50_ms=%.2f latency_p99_ms=%.2f",
		replicas, clients, pending, n, appendPayload, httpRate, bareRate, httpRate/bareRate, rm.rate(), httpRate/rm.rate(), backlog, deliverRate, p50, p99)
	if cl != nil {
		h, b, err := failover(cl, nc, srv, j.Config())
		if err != nil {
			return err
		}
		line += fmt.Sprintf(" failover_http_ms=%.0f failover_bare_ms=%.0f", h, b)
	}
	fmt.Println(line)
	return nil
}

// barePublish publishes requests messages of 100 records each, async (at
// most pending unacknowledged), over clients subjects of the journals'
// stream, and returns the entries per second acknowledged.
func barePublish(nc *nats.Conn, requests, clients, pending int, payload []byte) (float64, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(pending))
	if err != nil {
		return 0, err
	}
	// Each message is a valid journal message (its records, first index
	// and count), so that the workers bare0, bare1, ... are delivered
	// too: the k-th message of a subject holds entries 100k+1 to 100k+100.
	now := time.Now().UTC()
	data := make([][]byte, (requests+clients-1)/clients)
	for k := range data {
		es := make([]contract.Entry, 100)
		for i := range es {
			es[i] = contract.Entry{Index: uint64(k*100 + i + 1), Timestamp: now, Kind: "invoke", Payload: payload}
		}
		data[k] = oplog.AppendRecords(nil, es, now)
	}
	start := time.Now()
	for i := range requests {
		k := i / clients
		m := nats.NewMsg("soplug.oplog.bare" + strconv.Itoa(i%clients))
		m.Data = data[k]
		m.Header.Set("Soplug-First", strconv.Itoa(k*100+1))
		m.Header.Set("Soplug-Count", "100")
		if _, err := js.PublishMsgAsync(m); err != nil {
			return 0, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return 0, fmt.Errorf("bare publishes not acknowledged within a minute")
	}
	return float64(requests*100) / time.Since(start).Seconds(), nil
}

// natsProc counts what it is handed, and tells when entries of the
// worker "latency" arrive.
type natsProc struct {
	n       atomic.Int64
	arrived chan time.Time
}

func (*natsProc) Version() string                             { return "1.0.0" }
func (*natsProc) IsAcceptable() bool                          { return true }
func (*natsProc) Init(context.Context, contract.Config) error { return nil }
func (*natsProc) Close(context.Context) error                 { return nil }
func (p *natsProc) Process(_ context.Context, b contract.Batch) error {
	now := time.Now()
	if b.WorkerID == "latency" {
		for range b.Entries {
			p.arrived <- now
		}
		return nil
	}
	p.n.Add(int64(len(b.Entries)))
	return nil
}

// natsLatency appends n single entries to the worker "latency" over
// HTTP, each once the one before has arrived and a millisecond after, and
// returns the p50 and p99 of the time from sending to arrival, in ms.
func natsLatency(srv *server, arrived <-chan time.Time, n int) (float64, float64, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	took := make([]time.Duration, 0, n)
	for i := 1; i <= n; i++ {
		body := fmt.Sprintf(`{"entries":[{"index":%d,"kind":"invoke","payload":"aGk="}]}`, i)
		sent := time.Now()
		code, msg, err := post(client, srv.url+"latency/oplog", []byte(body))
		if err != nil {
			return 0, 0, err
		}
		if code != http.StatusOK {
			return 0, 0, fmt.Errorf("latency append %d: %d: %s", i, code, msg)
		}
		select {
		case at := <-arrived:
			took = append(took, at.Sub(sent))
		case <-time.After(30 * time.Second):
			return 0, 0, fmt.Errorf("latency append %d not delivered within 30 s", i)
		}
		time.Sleep(time.Millisecond)
	}
	slices.Sort(took)
	q := func(f float64) float64 { return float64(took[int(f*float64(len(took)-1))]) / 1e6 }
	return q(0.5), q(0.99), nil
}

// failover kills the stream leader while 4 clients append over HTTP to
// srv (each resending what was not answered 200) and a bare publisher
// publishes to the same stream, and returns the milliseconds from the kill
// to the first success of a request sent after it, for each.
func failover(cl *natstest.Cluster, nc *nats.Conn, srv *server, cfg natsjournal.Config) (float64, float64, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, 0, err
	}
	var fo natstest.Failover
	httpOK, bareOK := fo.Loop(), fo.Loop()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	client := &http.Client{Timeout: 30 * time.Second}
	for c := range 4 {
		wg.Go(func() {
			b64 := []byte("aGk=")
			for next := uint64(1); ctx.Err() == nil; {
				sent := time.Now()
				code, msg, err := post(client, srv.url+"failover-"+strconv.Itoa(c)+"/oplog", appendRequest(nil, next, 10, b64))
				switch {
				case err == nil && code == http.StatusOK:
					httpOK.Succeeded(sent)
					next += 10
				case err == nil && code != http.StatusServiceUnavailable:
					errs <- fmt.Errorf("failover append: %d: %s", code, msg)
					stop()
					return
				default:
					time.Sleep(20 * time.Millisecond) // 503 or a transport error: the same again
				}
			}
		})
	}
	wg.Go(func() { natstest.PublishLoop(ctx, js, cfg.Prefix+".bare", cfg.Timeout, bareOK) })
	defer func() { stop(); wg.Wait() }()
	time.Sleep(time.Second)
	if _, err := cl.KillStreamLeader(ctx, js, cfg.Stream, &fo); err != nil {
		return 0, 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := fo.Wait(wctx, httpOK, bareOK); err != nil {
		select {
		case cerr := <-errs: // a client that failed ended the wait: its error says why
			return 0, 0, cerr
		default:
		}
		return 0, 0, err
	}
	h, _ := httpOK.After()
	b, _ := bareOK.After()
	return float64(h) / 1e6, float64(b) / 1e6, nil
}
