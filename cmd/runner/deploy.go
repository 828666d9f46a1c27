package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	version "github.com/hashicorp/go-version"

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

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeResult prints a command's result v (a struct) as one JSON object
// with "ok" and, on failure, "error" beside v's fields.
func writeResult(w io.Writer, v any, err error) {
	fields := map[string]any{}
	if data, merr := json.Marshal(v); merr == nil {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber() // an int64 (a size, a time in ns) passes exactly, not as a float64
		_ = dec.Decode(&fields)
	}
	fields["ok"] = err == nil
	if err != nil {
		fields["error"] = err.Error()
	}
	_ = writeJSON(w, fields)
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
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: runner plugins install [--plugins DIR] [--name N] [--version V] [--force] [--json] FILE")
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
	res, err := in.Run(ctx, src)
	if *asJSON {
		writeResult(stdout, res, err)
		return deployExit(err)
	}
	if len(res.Diagnosis.Steps) > 0 {
		writeSteps(stdout, res.Diagnosis)
	}
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins install: refused, %s is unchanged: %v\n", lf.dir, err)
		return deployExit(err)
	}
	verb := "installed"
	if res.Replaced {
		verb = "replaced"
	}
	fmt.Fprintf(stdout, "%s %s %s (%s) as %s\n", verb, res.Name, res.Version, res.Kind, filepath.Join(lf.dir, res.File))
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
		writeResult(stdout, res, err)
		return deployExit(err)
	}
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins remove: refused, %s is unchanged: %v\n", lf.dir, err)
		return deployExit(err)
	}
	fmt.Fprintf(stdout, "removed %s\n", strings.Join(res.Files, ", "))
	switch {
	case res.Next == "":
		fmt.Fprintf(stdout, "%s now has no acceptable version: the daemon will serve none of it\n", name)
	case res.Next == res.Active:
		fmt.Fprintf(stdout, "the daemon keeps serving %s %s (%s)\n", name, res.Next, res.NextFile)
	default:
		fmt.Fprintf(stdout, "the daemon falls back to %s %s (%s) at its restart\n", name, res.Next, res.NextFile)
	}
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
		_ = writeJSON(stdout, d)
		return code
	}
	writeSteps(stdout, d)
	if d.Build != nil && len(d.Build.Differences) > 0 {
		fmt.Fprintln(stdout, "\nbuild differences from the runner:")
		for _, diff := range d.Build.Differences {
			fmt.Fprintf(stdout, "  %s\n", diff)
		}
		for _, c := range d.Build.Conflicts {
			fmt.Fprintf(stdout, "  conflict: %s\n", c)
		}
	}
	if d.Acceptable {
		fmt.Fprintf(stdout, "\nverdict: acceptable\n")
	} else {
		fmt.Fprintf(stdout, "\nverdict: rejected: %s\n", loader.Plain(stepReason(d)))
	}
	return code
}

func stepReason(d loader.Diagnosis) string {
	for _, s := range d.Steps {
		if s.Result == "failed" {
			return s.Detail
		}
	}
	return ""
}

// writeSteps prints a diagnosis as a table of its checks.
func writeSteps(w io.Writer, d loader.Diagnosis) {
	fmt.Fprintf(w, "%s", d.Path)
	if d.Name != "" {
		fmt.Fprintf(w, ": plugin %s", d.Name)
	}
	if d.Version != "" {
		fmt.Fprintf(w, " %s", d.Version)
	}
	if d.Kind != "" {
		fmt.Fprintf(w, " (%s)", d.Kind)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range d.Steps {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.Stage, s.Check, s.Result, loader.Plain(s.Detail))
	}
	_ = tw.Flush()
}
