package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	version "github.com/hashicorp/go-version"

	"github.com/soplug/soplug/internal/cliout"
	"github.com/soplug/soplug/internal/daemon"
	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/pluginconf"
	"github.com/soplug/soplug/internal/transform"
	"github.com/soplug/soplug/loader"
)

// checkCmd is "runner plugins check": it selects by probe alone, without
// loading anything into this process, and prints every candidate's verdict.
func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var lf loaderFlags
	fs := flag.NewFlagSet("plugins check", flag.ContinueOnError)
	lf.register(fs)
	asJSON := fs.Bool("json", false, "print the table as JSON")
	if !parse(fs, args, stderr) {
		return exitcode.Usage
	}
	cfg := lf.config()
	policy, err := lf.policy()
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins check: %v\n", err)
		return exitcode.Usage
	}
	if policy.InsecurePermissions {
		fmt.Fprintln(stderr, "runner plugins check: INSECURE: not checking the owner and mode of plugin files")
	}
	// With a state directory, the records and the verdict cache as the next
	// start will find them, read and never written: the blame that start
	// will apply is applied here in memory, so the table predicts it.
	store := lf.store()
	store.ReadOnly = true
	end, err := store.Begin()
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins check: %v\n", err)
		return exitcode.Failure
	}
	cfg.Admit = daemon.Admission(policy, store)
	if lf.stateDir != "" {
		cfg.Cache = loader.OpenCache(filepath.Join(lf.stateDir, daemon.CacheFile), loader.RunnerBuild(), nil)
		for _, r := range end.Blamed {
			cfg.Cache.Forget(r.Name, r.Version)
		}
	}
	conf, err := loadConfig(lf.confFile, lf.dir)
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins check: %v\n", err)
		if errors.Is(err, pluginconf.ErrSyntax) || errors.Is(err, pluginconf.ErrInvalid) {
			return exitcode.Config
		}
		return exitcode.NoInput
	}
	sel, err := loader.New(cfg).Check(ctx)
	code := exitFor(err)
	if code == exitcode.NoInput {
		fmt.Fprintf(stderr, "runner plugins check: %v\n", err)
		return code
	}
	if cerr := transform.CheckChain(conf, sel); cerr != nil {
		err, code = errors.Join(err, cerr), exitcode.Config
	}
	if *asJSON {
		if werr := cliout.JSON(stdout, cliout.NewCheckReport(sel, conf, err)); werr != nil {
			fmt.Fprintf(stderr, "runner plugins check: %v\n", werr)
			return exitcode.Failure
		}
		return code
	}
	if end.Unreadable != "" {
		fmt.Fprintf(stdout, "the next start ignores the previous run's record: %s\n", end.Unreadable)
	}
	for _, r := range end.Blamed {
		fmt.Fprintf(stdout, "the next start blames %s %s for the previous run's unclean end (crash %d in a row; quarantined: %v): %s\n",
			r.Name, r.Version, r.Crashes, store.Quarantines(r), r.Evidence)
	}
	if werr := cliout.Table(stdout, sel, err); werr != nil {
		fmt.Fprintf(stderr, "runner plugins check: %v\n", werr)
		return exitcode.Failure
	}
	if cfg.Cache != nil {
		fmt.Fprintf(stdout, "verdicts reused from %s: %d of %d looked up\n", filepath.Join(lf.stateDir, daemon.CacheFile), cfg.Cache.Hits(), cfg.Cache.Hits()+cfg.Cache.Misses())
	}
	cliout.Config(stdout, conf, sel)
	return code
}

// unquarantineCmd is "runner plugins unquarantine NAME VERSION".
func unquarantineCmd(args []string, stdout, stderr io.Writer) int {
	var lf loaderFlags
	fs := flag.NewFlagSet("plugins unquarantine", flag.ContinueOnError)
	lf.register(fs)
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	if len(pos) != 2 {
		fmt.Fprintf(stderr, "usage: runner plugins unquarantine [--state-dir DIR] NAME VERSION\n")
		return exitcode.Usage
	}
	if lf.stateDir == "" {
		fmt.Fprintf(stderr, "runner plugins unquarantine: no state directory: give --state-dir or set STATE_DIRECTORY\n")
		return exitcode.Usage
	}
	name, ver := pos[0], pos[1]
	if v, err := version.NewSemver(ver); err == nil {
		ver = v.String()
	}
	found, err := lf.store().Lift(name, ver)
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins unquarantine: %v\n", err)
		return exitcode.Failure
	}
	if !found {
		fmt.Fprintf(stderr, "runner plugins unquarantine: %s %s has no record in %s\n", name, ver, lf.stateDir)
		return exitcode.NoPlugin
	}
	fmt.Fprintf(stdout, "%s %s: quarantine lifted; the daemon tries it at its next start\n", name, ver)
	return exitcode.OK
}
