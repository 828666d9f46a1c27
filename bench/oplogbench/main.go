// Command oplogbench measures oplog delivery: entries per second through a
// processor that does nothing, with durable cursors, and the resident
// memory of a process that delivers a large backlog. bench/run runs it.
//
//	oplogbench throughput [-entries N] [-workers N] BATCH...   entries/s per batch size
//	oplogbench gen -bytes N DIR                               write a backlog of about N bytes into DIR
//	oplogbench deliver [-batch N] DIR                         deliver DIR's backlog; print entries/s and peak RSS
//	oplogbench idle [-workers N] [-seconds S] DIR             N delivered, idle workers: CPU and RSS they cost over S seconds
//	oplogbench latency [-entries N] DIR                       append over HTTP -> Process, one entry at a time: p50, p99
//	oplogbench append [-clients N] [-workers N] [-requests N] DIR
//	                                                         durable appends of 100 entries of 256 B: in-process Writer,
//	                                                         HTTP with each sync mode (a server process)
//	oplogbench nats [-replicas 1|3] [-clients N] [-requests N] DIR
//	                                                         HTTP appends to the JetStream journal, beside bare async publishes
//	oplogbench memory [-budget BYTES] [-clients N] [-rounds N] DIR
//	                                                         N clients at once send bodies of the largest size:
//	                                                         the server's peak RSS against budget + headroom
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
)

// noop acknowledges every batch, counting its entries.
type noop struct{ n atomic.Int64 }

func (*noop) Version() string                             { return "1.0.0" }
func (*noop) IsAcceptable() bool                          { return true }
func (*noop) Init(context.Context, contract.Config) error { return nil }
func (*noop) Close(context.Context) error                 { return nil }
func (p *noop) Process(_ context.Context, b contract.Batch) error {
	p.n.Add(int64(len(b.Entries)))
	return nil
}

const payloadSize = 100

// generate writes workers oplogs of perWorker entries each into dir.
func generate(dir string, workers, perWorker int) (int64, error) {
	payload := make([]byte, payloadSize)
	var total int64
	for w := range workers {
		wr, err := oplog.OpenWriter(dir, fmt.Sprintf("worker-%04d", w))
		if err != nil {
			return 0, err
		}
		batch := make([]contract.Entry, 0, 10_000)
		for i := 1; i <= perWorker; i++ {
			batch = append(batch, contract.Entry{Index: uint64(i), Timestamp: time.Unix(int64(i), 0), Kind: "invoke", Payload: payload})
			if len(batch) == cap(batch) || i == perWorker {
				if err := wr.Append(batch...); err != nil {
					return 0, err
				}
				batch = batch[:0]
			}
		}
		fi, err := os.Stat(wr.Path())
		if err != nil {
			return 0, err
		}
		total += fi.Size()
		wr.Close()
	}
	return total, nil
}

// deliver delivers everything in dir with batch size batch and returns the
// entries and how long it took.
func deliver(dir string, batch int, want int64) (int64, time.Duration, error) {
	p := &noop{}
	d, err := oplog.NewDeliverer(oplog.Config{Dir: dir, CursorDir: filepath.Join(dir, ".cursors"), BatchSize: batch, Poll: 10 * time.Millisecond}, "noop", "1.0.0", p)
	if err != nil {
		return 0, 0, err
	}
	stop, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- d.Run(stop, context.Background()) }()
	for p.n.Load() < want {
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	cancel()
	return p.n.Load(), took, <-done
}

// peakRSS returns VmHWM from /proc/self/status, in KiB.
func peakRSS() int64 { return procStatus("VmHWM:") }

// procStatus returns a field of /proc/self/status, in KiB.
func procStatus(field string) int64 { return statusField("/proc/self/status", field) }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: oplogbench throughput|gen|deliver|idle|latency|append|memory ...")
		os.Exit(64)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	entries := fs.Int("entries", 1_000_000, "entries in all")
	workers := fs.Int("workers", 100, "workers")
	bytes := fs.Int64("bytes", 1<<30, "backlog size")
	batch := fs.Int("batch", oplog.DefaultBatchSize, "batch size")
	seconds := fs.Int("seconds", 10, "how long idle workers are watched")
	clients := fs.Int("clients", 64, "concurrent clients (append)")
	requests := fs.Int("requests", 2560, "requests in all (append; at least one per worker)")
	budget := fs.Int64("budget", 256<<20, "the server's budget of bodies in flight, in bytes (memory)")
	rounds := fs.Int("rounds", 3, "bodies each client sends (memory)")
	replicasFlag := fs.Int("replicas", 1, "1: one nats-server; 3: a three-node cluster (nats)")
	pending := fs.Int("pending", 256, "the bare publisher's most async publishes awaiting acknowledgement (nats)")
	if os.Args[1] == "serve" {
		if err := serve(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "oplogbench serve:", err)
			os.Exit(1)
		}
		return
	}
	_ = fs.Parse(os.Args[2:])
	if os.Args[1] == "nats" {
		if fs.Arg(0) == "" {
			fmt.Fprintln(os.Stderr, "usage: oplogbench nats [-replicas 1|3] [-clients N] [-requests N] [-pending N] DIR")
			os.Exit(64)
		}
		if err := natsBench(fs.Arg(0), *replicasFlag, *clients, *requests, *pending); err != nil {
			fmt.Fprintln(os.Stderr, "oplogbench:", err)
			os.Exit(1)
		}
		return
	}
	if os.Args[1] == "memory" {
		if fs.Arg(0) == "" {
			fmt.Fprintln(os.Stderr, "usage: oplogbench memory [-budget BYTES] [-clients N] [-rounds N] DIR")
			os.Exit(64)
		}
		if err := memBench(fs.Arg(0), *budget, *clients, *rounds); err != nil {
			fmt.Fprintln(os.Stderr, "oplogbench:", err)
			os.Exit(1)
		}
		return
	}
	if os.Args[1] == "append" {
		if fs.Arg(0) == "" {
			fmt.Fprintln(os.Stderr, "usage: oplogbench append [-clients N] [-workers N] [-requests N] DIR")
			os.Exit(64)
		}
		if err := appendBench(fs.Arg(0), appendShape{clients: *clients, workers: *workers, requests: *requests, perRequest: 100}); err != nil {
			fmt.Fprintln(os.Stderr, "oplogbench:", err)
			os.Exit(1)
		}
		return
	}
	if os.Args[1] == "latency" {
		if err := latency(fs.Arg(0), min(*entries, 100_000)); err != nil {
			fmt.Fprintln(os.Stderr, "oplogbench:", err)
			os.Exit(1)
		}
		return
	}
	if os.Args[1] == "idle" {
		if err := idle(fs.Arg(0), *workers, time.Duration(*seconds)*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "oplogbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1], fs.Args(), *entries, *workers, *bytes, *batch); err != nil {
		fmt.Fprintln(os.Stderr, "oplogbench:", err)
		os.Exit(1)
	}
}

func run(cmd string, args []string, entries, workers int, size int64, batch int) error {
	switch cmd {
	case "throughput":
		for _, a := range args {
			b, err := strconv.Atoi(a)
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "oplogbench-")
			if err != nil {
				return err
			}
			n := entries
			if b == 1 {
				n = min(n, 20_000) // one fsync per entry: a smaller backlog
			}
			if _, err := generate(dir, workers, n/workers); err != nil {
				return err
			}
			got, took, err := deliver(dir, b, int64(n/workers*workers))
			os.RemoveAll(dir)
			if err != nil {
				return err
			}
			fmt.Printf("batch=%d entries=%d seconds=%.3f entries_per_second=%.0f\n", b, got, took.Seconds(), float64(got)/took.Seconds())
		}
	case "gen":
		perEntry := int64(8 + 17 + len("invoke") + payloadSize)
		per := int(size / perEntry / int64(workers))
		total, err := generate(args[0], workers, per)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(args[0], ".entries"), []byte(strconv.Itoa(per*workers)), 0o644); err != nil {
			return err
		}
		fmt.Printf("entries=%d bytes=%d\n", per*workers, total)
	case "deliver":
		data, err := os.ReadFile(filepath.Join(args[0], ".entries")) // written by gen
		if err != nil {
			return err
		}
		want, err := strconv.ParseInt(string(data), 10, 64)
		if err != nil {
			return err
		}
		if err := os.RemoveAll(filepath.Join(args[0], ".cursors")); err != nil { // from an earlier run
			return err
		}
		got, took, err := deliver(args[0], batch, want)
		if err != nil {
			return err
		}
		fmt.Printf("batch=%d entries=%d seconds=%.3f entries_per_second=%.0f peak_rss_kib=%d\n", batch, got, took.Seconds(), float64(got)/took.Seconds(), peakRSS())
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	return nil
}

// rss returns VmRSS from /proc/self/status, in KiB.
func rss() int64 { return procStatus("VmRSS:") }

// cpu returns the CPU time this process has used.
func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idle writes workers oplogs of one entry into dir, delivers them, and
// then watches the idle delivery for d: the CPU it takes (percent of one
// core), its resident memory over the process's before delivery started,
// and its goroutines.
func idle(dir string, workers int, d time.Duration) error {
	if dir == "" {
		return fmt.Errorf("usage: oplogbench idle [-workers N] [-seconds S] DIR")
	}
	if _, err := generate(dir, workers, 1); err != nil {
		return err
	}
	debug.FreeOSMemory()
	baseRSS, baseG := rss(), runtime.NumGoroutine()
	p := &noop{}
	dl, err := oplog.NewDeliverer(oplog.Config{Dir: dir, CursorDir: filepath.Join(dir, ".cursors")}, "noop", "1.0.0", p)
	if err != nil {
		return err
	}
	stop, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- dl.Run(stop, context.Background()) }()
	for p.n.Load() < int64(workers) {
		time.Sleep(10 * time.Millisecond)
	}
	for runtime.NumGoroutine() > baseG+10 { // the last cursor writes end
		time.Sleep(10 * time.Millisecond)
	}
	caughtUp := time.Since(start)
	debug.FreeOSMemory() // what the catch-up freed goes back, as the scavenger would return it
	c0, t0 := cpu(), time.Now()
	time.Sleep(d)
	busy := float64(cpu()-c0) / float64(time.Since(t0)) * 100
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if path := os.Getenv("OPLOGBENCH_HEAP"); path != "" { // a heap profile of the idle delivery
		if f, err := os.Create(path); err == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	fmt.Printf("workers=%d caught_up_seconds=%.2f idle_cpu_percent_of_core=%.3f rss_over_base_mib=%.1f heap_inuse_mib=%.1f goroutines_over_base=%d\n",
		workers, caughtUp.Seconds(), busy, float64(rss()-baseRSS)/1024, float64(ms.HeapInuse)/(1<<20), runtime.NumGoroutine()-baseG)
	cancel()
	return <-done
}

// arrival is a processor that tells when each entry arrives.
type arrival struct{ at chan time.Time }

func (*arrival) Version() string                             { return "1.0.0" }
func (*arrival) IsAcceptable() bool                          { return true }
func (*arrival) Init(context.Context, contract.Config) error { return nil }
func (*arrival) Close(context.Context) error                 { return nil }
func (a *arrival) Process(_ context.Context, b contract.Batch) error {
	now := time.Now()
	for range b.Entries {
		a.at <- now
	}
	return nil
}

// latency appends n entries one at a time over HTTP (the daemon's
// appender, durable before the 200) to a delivery that is idle between
// them, and prints the time from sending the request to Process seeing
// the entry: p50, p99 and the largest.
func latency(dir string, n int) error {
	if dir == "" {
		return fmt.Errorf("usage: oplogbench latency [-entries N] DIR")
	}
	j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: dir})
	defer j.Close()
	a := oplog.NewAppender(oplog.AppenderConfig{Journal: j})
	mux := http.NewServeMux()
	mux.Handle("POST /v1/workers/{id}/oplog", a)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	p := &arrival{at: make(chan time.Time, 1)}
	d, err := oplog.NewDeliverer(oplog.Config{Journal: j, CursorDir: filepath.Join(dir, ".cursors")}, "latency", "1.0.0", p)
	if err != nil {
		return err
	}
	stop, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(stop, context.Background()) }()
	url := "http://" + ln.Addr().String() + "/v1/workers/w/oplog"
	client := &http.Client{Timeout: 10 * time.Second}
	took := make([]time.Duration, 0, n)
	for i := 1; i <= n; i++ {
		body := fmt.Sprintf(`{"entries":[{"index":%d,"kind":"invoke","payload":"aGk="}]}`, i)
		start := time.Now()
		resp, err := client.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("append %d: status %d", i, resp.StatusCode)
		}
		took = append(took, (<-p.at).Sub(start))
		time.Sleep(time.Millisecond) // idle between appends: every entry wakes the worker anew
	}
	cancel()
	if err := <-done; err != nil {
		return err
	}
	slices.Sort(took)
	q := func(f float64) float64 { return float64(took[int(f*float64(len(took)-1))]) / 1e6 }
	fmt.Printf("entries=%d p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n", n, q(0.5), q(0.99), q(1))
	return nil
}
