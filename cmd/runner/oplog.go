package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/inflight"
	"github.com/soplug/soplug/loader"
	"github.com/soplug/soplug/oplog"
	"github.com/soplug/soplug/pluginconf"
)

// oplogFlags configure the oplog service of run.
type oplogFlags struct {
	dir         string
	batch       int
	commitEvery int
	parallel    int
	parkAfter   int
	control     string
	maxAppend   int64
	maxOpen     int
}

func (f *oplogFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "oplog-dir", "", "the workers' oplog folder (empty: no oplog service)")
	fs.IntVar(&f.batch, "oplog-batch", oplog.DefaultBatchSize, "the most entries one Process call gets")
	fs.IntVar(&f.commitEvery, "oplog-commit-every", 0, "entries that may share one cursor write (0: one write per batch; see the README for what a crash then flags)")
	fs.IntVar(&f.parallel, "oplog-parallel", 0, "workers delivered at once (0: GOMAXPROCS)")
	fs.IntVar(&f.parkAfter, "oplog-park-after", oplog.DefaultParkAfter, "failures in a row that park a worker")
	fs.Int64Var(&f.maxAppend, "oplog-max-body", oplog.DefaultMaxAppendBytes, "the largest append request body, in bytes")
	fs.IntVar(&f.maxOpen, "oplog-max-open", oplog.DefaultMaxOpenWriters, "workers' oplogs kept open for appends between requests (one file descriptor each)")
	registerControl(fs, &f.control)
}

func registerControl(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "control-socket", "", "the oplog control socket (default: control.sock in --state-dir, or .control.sock in --oplog-dir)")
}

// controlPath returns the control socket's path for these folders.
func controlPath(flagValue, stateDir, oplogDir string) string {
	switch {
	case flagValue != "":
		return flagValue
	case stateDir != "":
		return filepath.Join(stateDir, "control.sock")
	case oplogDir != "":
		return filepath.Join(oplogDir, ".control.sock")
	}
	return ""
}

// oplogService appends workers' entries and delivers them to every selected
// OplogProcessor: a daemon.Service.
type oplogService struct {
	flags    oplogFlags
	stateDir string
	conf     *pluginconf.File
	log      *slog.Logger
	budget   *inflight.Budget

	appender *oplog.Appender
	control  *oplog.Control
	procs    []contract.OplogProcessor
	ctlSrv   *http.Server
	stop     context.CancelFunc // ends delivery: no new batches
	endProc  context.CancelFunc // ends the batches in flight
	running  sync.WaitGroup
}

// cursorRoot is where the processors' cursors and the pause set live.
func (o *oplogService) cursorRoot() string {
	if o.stateDir != "" {
		return filepath.Join(o.stateDir, "oplog")
	}
	return filepath.Join(o.flags.dir, ".cursors")
}

// Start opens the oplog folder for appends, starts a delivery to each
// selected OplogProcessor (after its Init with its configuration), and
// listens on the control socket.
func (o *oplogService) Start(ctx context.Context, sel *loader.Selection, mux *http.ServeMux, reg prometheus.Registerer) (err error) {
	defer func() {
		if err != nil {
			_ = o.Stop(context.WithoutCancel(ctx)) // what started before the error
		}
	}()
	m, err := oplog.NewMetrics(reg)
	if err != nil {
		return err
	}
	pauses, err := oplog.OpenPauseSet(filepath.Join(o.cursorRoot(), "paused.json"))
	if err != nil {
		return err
	}
	o.control = &oplog.Control{Dir: o.flags.dir, Paused: pauses}
	stop, cancel := context.WithCancel(context.WithoutCancel(ctx))
	procCtx, endProc := context.WithCancel(context.WithoutCancel(ctx))
	o.stop, o.endProc = cancel, endProc
	for _, c := range sel.Selected() {
		p, ok := c.Plugin.(contract.OplogProcessor)
		if !ok {
			continue
		}
		if err := p.Init(ctx, o.conf.For(c.Name).Config); err != nil {
			return fmt.Errorf("oplog: %s %s: Init: %w", c.Name, c.Version, err)
		}
		o.procs = append(o.procs, p)
		d, err := oplog.NewDeliverer(oplog.Config{
			Dir: o.flags.dir, CursorDir: filepath.Join(o.cursorRoot(), c.Name),
			BatchSize: o.flags.batch, CommitEvery: o.flags.commitEvery, Parallel: o.flags.parallel, ParkAfter: o.flags.parkAfter,
			Paused: pauses, Metrics: m, Logger: o.log,
		}, c.Name, c.Version.String(), p)
		if err != nil {
			return err
		}
		o.control.Deliverers = append(o.control.Deliverers, d)
		o.running.Go(func() {
			if err := d.Run(stop, procCtx); err != nil {
				o.log.Error("oplog delivery stopped", "processor", c.Name, "err", err)
			}
		})
		o.log.Info("oplog delivery started", "processor", c.Name, "version", c.Version.String(), "dir", o.flags.dir)
	}
	o.appender = oplog.NewAppender(oplog.AppenderConfig{Dir: o.flags.dir, MaxBytes: o.flags.maxAppend,
		MaxOpen: o.flags.maxOpen, Budget: o.budget, Metrics: m, Logger: o.log})
	mux.Handle("POST /v1/workers/{id}/oplog", o.appender)
	o.control.Register(mux, false)
	return o.listenControl()
}

// listenControl serves the control endpoints on a unix socket only the
// service's user can reach.
func (o *oplogService) listenControl() error {
	path := controlPath(o.flags.control, o.stateDir, o.flags.dir)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("oplog: control socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("oplog: control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("oplog: control socket: %w", err)
	}
	cmux := http.NewServeMux()
	o.control.Register(cmux, true)
	o.ctlSrv = &http.Server{Handler: cmux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = o.ctlSrv.Serve(ln) }()
	o.log.Info("oplog control socket", "path", path)
	return nil
}

// Drain starts no new batch.
func (o *oplogService) Drain() {
	if o.stop != nil {
		o.stop()
	}
}

// Stop waits for the batches in flight (ending them when ctx does), records
// the cursors, closes the processors, the oplogs and the control socket.
func (o *oplogService) Stop(ctx context.Context) error {
	if o.stop == nil {
		return nil
	}
	o.Drain()
	done := make(chan struct{})
	go func() { o.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		o.endProc()
		<-done
	}
	o.endProc()
	var errs []error
	for _, p := range o.procs {
		errs = append(errs, p.Close(context.WithoutCancel(ctx)))
	}
	if o.appender != nil {
		errs = append(errs, o.appender.Close())
	}
	if o.ctlSrv != nil {
		errs = append(errs, o.ctlSrv.Close())
	}
	return errors.Join(errs...)
}

// Report is the oplog's state in /v1/health.
func (o *oplogService) Report() (string, any) { return "oplog", o.control.Status() }

// oplogCmd is "runner oplog activate|deactivate WORKER" and "runner oplog
// status": it asks the running daemon over its control socket.
func oplogCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "usage: runner oplog activate|deactivate WORKER | runner oplog status  [--control-socket PATH] [--state-dir DIR] [--oplog-dir DIR]\n")
		return exitUsage
	}
	verb := args[0]
	fs := flag.NewFlagSet("oplog "+verb, flag.ContinueOnError)
	var control, oplogDir string
	registerControl(fs, &control)
	stateDir := fs.String("state-dir", os.Getenv("STATE_DIRECTORY"), "the daemon's state directory")
	fs.StringVar(&oplogDir, "oplog-dir", "", "the daemon's oplog folder")
	pos, ok := parseArgs(fs, args[1:], stderr)
	if !ok {
		return exitUsage
	}
	path := controlPath(control, *stateDir, oplogDir)
	if path == "" {
		fmt.Fprintf(stderr, "runner oplog %s: where is the daemon? give --control-socket, --state-dir or --oplog-dir\n", verb)
		return exitUsage
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
	var req *http.Request
	var err error
	switch {
	case verb == "status" && len(pos) == 0:
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, "http://soplug/v1/oplog", nil)
	case (verb == "activate" || verb == "deactivate") && len(pos) == 1:
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, "http://soplug/v1/workers/"+pos[0]+"/"+verb, nil)
	default:
		fmt.Fprint(stderr, "usage: runner oplog activate|deactivate WORKER | runner oplog status\n")
		return exitUsage
	}
	if err != nil {
		fmt.Fprintf(stderr, "runner oplog %s: %v\n", verb, err)
		return exitUsage
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "runner oplog %s: the daemon is not reachable at %s: %v\n", verb, path, err)
		return exitNoInput
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		var e oplog.ErrorResponse
		_ = json.Unmarshal(body, &e)
		fmt.Fprintf(stderr, "runner oplog %s: %s\n", verb, e.Error)
		return exitFailure
	}
	switch verb {
	case "activate":
		fmt.Fprintf(stdout, "%s: delivery resumed; the processor catches up from its cursor\n", pos[0])
	case "deactivate":
		fmt.Fprintf(stdout, "%s: delivery paused; its cursor holds and entries accumulate\n", pos[0])
	default:
		_, _ = stdout.Write(body)
	}
	return exitOK
}
