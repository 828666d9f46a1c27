package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	version "github.com/hashicorp/go-version"

	"github.com/soplug/soplug/internal/cliout"
	"github.com/soplug/soplug/internal/deploy"
	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/loader"
)

// deployExit maps an install or remove error to an exit status.
func deployExit(err error) int {
	switch {
	case err == nil:
		return exitcode.OK
	case errors.Is(err, deploy.ErrUsage):
		return exitcode.Usage
	case errors.Is(err, os.ErrNotExist), errors.Is(err, os.ErrPermission):
		return exitcode.NoInput
	}
	return exitcode.Failure
}

// installCmd is "runner plugins install FILE".
func installCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var lf loaderFlags
	fs := flag.NewFlagSet("plugins install", flag.ContinueOnError)
	lf.register(fs)
	in := deploy.Install{}
	fs.StringVar(&in.Name, "name", "", "the plugin's name, when FILE is not named <name>_v<semver>.so")
	fs.StringVar(&in.Version, "version", "", "the plugin's version, when FILE's name has none (must match its Version())")
	fs.BoolVar(&in.Force, "force", false, "replace an installed file of the same version")
	fs.BoolVar(&in.RequireAcceptable, "require-acceptable", false, "refuse a file whose IsAcceptable() is false on this host (by default it is installed with a note)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: runner plugins install [--plugins DIR] [--name N] [--version V] [--force] [--require-acceptable] [--json] FILE")
		return exitcode.Usage
	}
	src := pos[0]
	in.Loader = lf.config()
	policy, err := lf.policy()
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins install: %v\n", err)
		return exitcode.Usage
	}
	in.Loader.Admit = lf.admit(policy)
	in.VerifiesSignatures = len(policy.Keys) > 0
	res, err := in.Run(ctx, src)
	if *asJSON {
		_ = cliout.Result(stdout, res, err)
		return deployExit(err)
	}
	if len(res.Diagnosis.Steps) > 0 {
		cliout.Steps(stdout, res.Diagnosis)
	}
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins install: refused, %s is unchanged: %v\n", lf.dir, err)
		return deployExit(err)
	}
	cliout.Installed(stdout, res, lf.dir)
	return exitcode.OK
}

// removeCmd is "runner plugins remove NAME VERSION".
func removeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var lf loaderFlags
	fs := flag.NewFlagSet("plugins remove", flag.ContinueOnError)
	lf.register(fs)
	rm := deploy.Remove{}
	fs.BoolVar(&rm.Force, "force", false, "remove the last acceptable version of the plugin too")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	if len(pos) != 2 {
		fmt.Fprintln(stderr, "usage: runner plugins remove [--plugins DIR] [--state-dir DIR] [--force] [--json] NAME VERSION")
		return exitcode.Usage
	}
	name, ver := pos[0], pos[1]
	if _, err := version.NewSemver(ver); err != nil {
		fmt.Fprintf(stderr, "runner plugins remove: %q is not a version\n", ver)
		return exitcode.Usage
	}
	rm.Loader = lf.config()
	policy, err := lf.policy()
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins remove: %v\n", err)
		return exitcode.Usage
	}
	rm.Loader.Admit = lf.admit(policy)
	res, err := rm.Run(ctx, name, ver)
	if *asJSON {
		_ = cliout.Result(stdout, res, err)
		return deployExit(err)
	}
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins remove: refused, %s is unchanged: %v\n", lf.dir, err)
		return deployExit(err)
	}
	cliout.Removed(stdout, name, res)
	return exitcode.OK
}

// whyCmd is "runner plugins why FILE" or "runner plugins why NAME VERSION".
func whyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var lf loaderFlags
	fs := flag.NewFlagSet("plugins why", flag.ContinueOnError)
	lf.register(fs)
	asJSON := fs.Bool("json", false, "print the diagnosis as JSON")
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	var path string
	switch len(pos) {
	case 1:
		path = pos[0]
	case 2:
		files, err := deploy.Files(lf.dir, pos[0], pos[1])
		if err != nil {
			fmt.Fprintf(stderr, "runner plugins why: %v\n", err)
			return deployExit(err)
		}
		if len(files) == 0 {
			fmt.Fprintf(stderr, "runner plugins why: %s %s is not in %s\n", pos[0], pos[1], lf.dir)
			return exitcode.NoInput
		}
		path = filepath.Join(lf.dir, files[0])
	default:
		fmt.Fprintln(stderr, "usage: runner plugins why [--plugins DIR] [--state-dir DIR] [--json] FILE | NAME VERSION")
		return exitcode.Usage
	}
	if _, err := os.Stat(path); err != nil {
		fmt.Fprintf(stderr, "runner plugins why: %v\n", err)
		return exitcode.NoInput
	}
	cfg := lf.config()
	policy, err := lf.policy()
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins why: %v\n", err)
		return exitcode.Usage
	}
	cfg.Admit = lf.admit(policy)
	d := loader.New(cfg).Diagnose(ctx, path, "", nil)
	code := exitcode.OK
	if !d.Acceptable {
		code = exitcode.NoPlugin
	}
	if *asJSON {
		_ = cliout.JSON(stdout, d)
		return code
	}
	cliout.Diagnosis(stdout, d)
	return code
}
