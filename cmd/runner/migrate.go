package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/soplug/soplug/internal/cliout"
	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/oplog"
)

// migrateResult is "runner oplog migrate --json"'s answer.
type migrateResult struct {
	Workers  []oplog.MigrateResult `json:"workers"`
	Verified int                   `json:"verified"`
	Copied   int                   `json:"copied"`
}

// migrateCmd is "runner oplog migrate --from DIR [--state-dir DIR] --to
// URLS": the local journals and cursors copied to JetStream, verified.
func migrateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("oplog migrate", flag.ContinueOnError)
	from := fs.String("from", "", "the oplog folder to copy (--oplog-dir of the runner)")
	stateDir := fs.String("state-dir", os.Getenv("STATE_DIRECTORY"), "the runner's state directory, where its cursors are (empty: in --from's .cursors)")
	var nf natsFlags
	registerNATS(fs, &nf)
	// The migration's leases on the workers it carries cursors for are
	// short by default: the runners take the workers a second after it
	// ends.
	nf.lease = time.Second
	fs.Lookup("oplog-nats-lease").DefValue = "1s"
	fs.StringVar(&nf.urls, "to", "", "the NATS servers to copy to (URL[,URL...])")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	if len(pos) != 0 || *from == "" || nf.urls == "" {
		fmt.Fprintln(stderr, "usage: runner oplog migrate --from DIR [--state-dir DIR] --to URL[,URL...] [--oplog-nats-replicas N] [--oplog-nats-creds FILE] [--json]")
		return exitcode.Usage
	}
	if err := nf.check(""); err != nil {
		fmt.Fprintf(stderr, "runner oplog migrate: %v\n", err)
		return exitcode.Usage
	}
	if _, err := os.Stat(*from); err != nil {
		fmt.Fprintf(stderr, "runner oplog migrate: --from: %v\n", err)
		return exitcode.NoInput
	}
	cursorRoot := filepath.Join(*from, ".cursors")
	if *stateDir != "" {
		cursorRoot = filepath.Join(*stateDir, "oplog")
	}
	var processors []string
	entries, err := os.ReadDir(cursorRoot)
	if err != nil && !os.IsNotExist(err) {
		fmt.Fprintf(stderr, "runner oplog migrate: the cursors: %v\n", err)
		return exitcode.NoInput
	}
	for _, e := range entries {
		if e.IsDir() {
			processors = append(processors, e.Name())
		}
	}
	src := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: *from, CursorDir: cursorRoot})
	defer src.Close()
	dst, closeDst, err := nf.journal(slog.New(slog.DiscardHandler))(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "runner oplog migrate: %v\n", err)
		return exitcode.Failure
	}
	defer closeDst()
	var res migrateResult
	res.Workers = []oplog.MigrateResult{}
	err = oplog.Migrate(ctx, src, dst, processors, src.Cursors, func(r oplog.MigrateResult) {
		res.Workers = append(res.Workers, r)
		res.Verified += r.Verified
		res.Copied += r.Copied
		if !*asJSON {
			fmt.Fprintf(stdout, "%s: %d entries verified (%d copied now); cursors carried: %v\n", r.Worker, r.Verified, r.Copied, r.Cursors)
		}
	})
	if *asJSON {
		_ = cliout.Result(stdout, res, err)
	} else if err == nil {
		fmt.Fprintf(stdout, "%d workers, %d entries verified on %s (%d copied now)\n", len(res.Workers), res.Verified, nf.urls, res.Copied)
	}
	if err != nil {
		if !*asJSON {
			fmt.Fprintf(stderr, "runner oplog migrate: %v (run it again: what was copied is checked, not copied twice)\n", err)
		}
		return exitcode.Failure
	}
	return exitcode.OK
}
