package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/soplug/soplug/internal/cliout"
	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/pluginbuild"
)

// buildExit maps a plugins build or new error to an exit status.
func buildExit(err error) int {
	switch {
	case err == nil:
		return exitcode.OK
	case errors.Is(err, os.ErrNotExist):
		return exitcode.NoInput
	}
	return exitcode.Failure
}

// buildCmd is "runner plugins build MODULE_DIR".
func buildCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plugins build", flag.ContinueOnError)
	var o pluginbuild.Options
	fs.StringVar(&o.Runner, "runner", "", "the runner binary to build against (default: this one)")
	fs.StringVar(&o.Runner, "for", "", "the same as --runner: a runner of another release (the one the fleet runs, or the next) to build a loadable file for")
	fs.StringVar(&o.Out, "out", ".", "the folder to write <name>_v<Version()>.so into")
	fs.StringVar(&o.Name, "name", "", "the plugin's name (default: the last element of --pkg, or of the module path)")
	fs.StringVar(&o.Pkg, "pkg", "", "the plugin's main package inside the module, e.g. ./cmd/stamp (default: the module's root)")
	fs.BoolVar(&o.Exec, "exec", false, "build the out-of-process executable instead of the .so")
	fs.BoolVar(&o.Test, "test", false, "run the module's tests (go test ./...) with the same versions and flags first")
	fs.BoolVar(&o.RequireAcceptable, "require-acceptable", false, "fail when the plugin's IsAcceptable() is false on this host (by default the file is written with a note)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: runner plugins build [--runner PATH | --for PATH] [--out DIR] [--name N] [--pkg PATH] [--exec] [--test] [--require-acceptable] [--json] MODULE_DIR")
		return exitcode.Usage
	}
	o.Module = pos[0]
	o.Log = stderr
	res, err := pluginbuild.Build(ctx, o)
	if *asJSON {
		_ = cliout.Result(stdout, res, err)
		return buildExit(err)
	}
	if err != nil {
		if len(res.Diagnosis.Steps) > 0 {
			cliout.Steps(stdout, res.Diagnosis)
		}
		fmt.Fprintf(stderr, "runner plugins build: %v\n", err)
		return buildExit(err)
	}
	fmt.Fprintf(stdout, "built %s %s (%s) as %s with %s %s\n", res.Name, res.Version, res.Kind, res.File, res.Toolchain, strings.Join(res.Flags, " "))
	for _, c := range res.Raised {
		fmt.Fprintf(stdout, "  %s raised from %s to %s, %s\n", c.Path, c.From, c.To, c.Why)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(stdout, "note: %s\n", n)
	}
	return exitcode.OK
}

// newCmd is "runner plugins new NAME [DIR]".
func newCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plugins new", flag.ContinueOnError)
	var o pluginbuild.NewOptions
	fs.StringVar(&o.Kind, "kind", pluginbuild.KindTransformer, "transformer or oplog")
	fs.StringVar(&o.Module, "module", "", "the module path (default: example.com/NAME)")
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	if len(pos) < 1 || len(pos) > 2 {
		fmt.Fprintln(stderr, "usage: runner plugins new [--kind transformer|oplog] [--module PATH] NAME [DIR]")
		return exitcode.Usage
	}
	o.Name = pos[0]
	if len(pos) == 2 {
		o.Dir = pos[1]
	}
	files, err := pluginbuild.New(o)
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins new: %v\n", err)
		if errors.Is(err, pluginbuild.ErrExists) || errors.Is(err, pluginbuild.ErrModule) {
			return exitcode.Usage
		}
		return exitcode.Failure
	}
	for _, f := range files {
		fmt.Fprintf(stdout, "wrote %s\n", f)
	}
	dir := o.Dir
	if dir == "" {
		dir = o.Name
	}
	if err := pluginbuild.Tidy(ctx, dir); err != nil {
		fmt.Fprintf(stderr, "runner plugins new: the module is written, but %v\nrun go mod tidy in %s once the go command can reach the module proxy\n", err, dir)
	} else {
		fmt.Fprintf(stdout, "wrote %s (go mod tidy): go build, test and vet ./... work there\n", filepath.Join(dir, "go.sum"))
	}
	fmt.Fprintf(stdout, "next: runner plugins build --test --out dist %s\n", dir)
	return exitcode.OK
}

// contractCmd is "runner plugins contract DIR".
func contractCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plugins contract", flag.ContinueOnError)
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: runner plugins contract DIR")
		return exitcode.Usage
	}
	if err := pluginbuild.WriteContract(pos[0]); err != nil {
		fmt.Fprintf(stderr, "runner plugins contract: %v\n", err)
		return exitcode.Failure
	}
	fmt.Fprintf(stdout, "wrote the contract module %s into %s\n", pluginbuild.ContractModule, pos[0])
	return exitcode.OK
}
