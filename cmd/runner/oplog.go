package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/soplug/soplug/internal/cliout"
	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/oplog"
)

// registerOplog registers run's --oplog-* flags into c.
func registerOplog(fs *flag.FlagSet, c *oplog.ServiceConfig) {
	fs.StringVar(&c.Dir, "oplog-dir", "", "the workers' oplog folder (empty: no oplog service)")
	fs.IntVar(&c.Batch, "oplog-batch", oplog.DefaultBatchSize, "the most entries one Process call gets")
	fs.IntVar(&c.CommitEvery, "oplog-commit-every", 0, "entries that may share one cursor write (0: one write per batch; see the README for what a crash then flags)")
	fs.IntVar(&c.Parallel, "oplog-parallel", 0, "workers delivered at once (0: GOMAXPROCS)")
	fs.IntVar(&c.ParkAfter, "oplog-park-after", oplog.DefaultParkAfter, "failures in a row that park a worker")
	fs.DurationVar(&c.HangAfter, "oplog-hang-after", oplog.DefaultHangAfter, "how long a Process call may run before the daemon stops feeding systemd's watchdog, which then aborts it with every stack (0 or negative: never)")
	fs.Int64Var(&c.MaxAppend, "oplog-max-body", oplog.DefaultMaxAppendBytes, "the largest append request body, in bytes")
	fs.IntVar(&c.MaxOpen, "oplog-max-open", oplog.DefaultMaxOpenWriters, "workers' oplogs kept open for appends between requests (one file descriptor each)")
	fs.TextVar(&c.Sync, "oplog-sync", oplog.SyncAuto, "how appends are made durable: filesystem (one syncfs shared by the appends to all workers), file (one fsync per oplog, shared by one worker's appends), each-append, or auto (filesystem, except on network and FUSE file systems)")
	registerControl(fs, &c.Control)
}

func registerControl(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "control-socket", "", "the oplog control socket (default: control.sock in --state-dir, or .control.sock in --oplog-dir)")
}

// oplogCmd is "runner oplog activate|deactivate WORKER" and "runner oplog
// status", which ask the running daemon over its control socket, and
// "runner oplog repair WORKER", which cuts a corrupt oplog itself.
func oplogCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "usage: runner oplog activate|deactivate WORKER | runner oplog status  [--control-socket PATH] [--state-dir DIR] [--oplog-dir DIR] | runner oplog repair --oplog-dir DIR [--json] WORKER | runner oplog migrate --from DIR [--state-dir DIR] --to URLS [--json]\n")
		return exitcode.Usage
	}
	verb := args[0]
	if verb == "repair" {
		return repairCmd(args[1:], stdout, stderr)
	}
	if verb == "migrate" {
		return migrateCmd(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("oplog "+verb, flag.ContinueOnError)
	var control, oplogDir string
	registerControl(fs, &control)
	stateDir := fs.String("state-dir", os.Getenv("STATE_DIRECTORY"), "the daemon's state directory")
	fs.StringVar(&oplogDir, "oplog-dir", "", "the daemon's oplog folder")
	pos, ok := parseArgs(fs, args[1:], stderr)
	if !ok {
		return exitcode.Usage
	}
	path := oplog.ControlPath(control, *stateDir, oplogDir)
	if path == "" {
		fmt.Fprintf(stderr, "runner oplog %s: where is the daemon? give --control-socket, --state-dir or --oplog-dir\n", verb)
		return exitcode.Usage
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
		return exitcode.Usage
	}
	if err != nil {
		fmt.Fprintf(stderr, "runner oplog %s: %v\n", verb, err)
		return exitcode.Usage
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "runner oplog %s: the daemon is not reachable at %s: %v\n", verb, path, err)
		return exitcode.NoInput
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		var e oplog.ErrorResponse
		_ = json.Unmarshal(body, &e)
		fmt.Fprintf(stderr, "runner oplog %s: %s\n", verb, e.Error)
		return exitcode.Failure
	}
	switch verb {
	case "activate":
		fmt.Fprintf(stdout, "%s: delivery resumed; the processor catches up from its cursor\n", pos[0])
	case "deactivate":
		fmt.Fprintf(stdout, "%s: delivery paused; its cursor holds and entries accumulate\n", pos[0])
	default:
		_, _ = stdout.Write(body)
	}
	return exitcode.OK
}

// repairCmd is "runner oplog repair --oplog-dir DIR WORKER".
func repairCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("oplog repair", flag.ContinueOnError)
	dir := fs.String("oplog-dir", "", "the workers' oplog folder")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	if len(pos) != 1 || *dir == "" {
		fmt.Fprintln(stderr, "usage: runner oplog repair --oplog-dir DIR [--json] WORKER")
		return exitcode.Usage
	}
	res, err := oplog.Repair(*dir, pos[0])
	code := exitcode.OK
	switch {
	case err == nil, errors.Is(err, oplog.ErrNothingToRepair):
	case errors.Is(err, oplog.ErrLocked):
		code = exitcode.InUse
	case errors.Is(err, os.ErrNotExist), errors.Is(err, oplog.ErrWorkerID):
		code = exitcode.NoInput
	default:
		code = exitcode.Failure
	}
	if *asJSON {
		_ = cliout.Result(stdout, res, err)
		return code
	}
	switch {
	case errors.Is(err, oplog.ErrNothingToRepair):
		fmt.Fprintf(stdout, "%s: no corrupt record, nothing changed\n", filepath.Base(res.Path))
	case err != nil:
		fmt.Fprintf(stderr, "runner oplog repair: %v\n", err)
	default:
		cliout.Repaired(stdout, res)
	}
	return code
}
