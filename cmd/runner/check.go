package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/soplug/soplug/loader"
)

// checkReport is the JSON form of plugins check.
type checkReport struct {
	*loader.Selection
	OK     bool     `json:"ok"`
	Errors []string `json:"errors,omitempty"`
}

// checkCmd is "runner plugins check": it selects by probe alone, without
// loading anything into this process, and prints every candidate's verdict.
func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var lf loaderFlags
	fs := flag.NewFlagSet("plugins check", flag.ContinueOnError)
	lf.register(fs)
	asJSON := fs.Bool("json", false, "print the table as JSON")
	if !parse(fs, args, stderr) {
		return exitUsage
	}
	sel, err := loader.New(lf.config()).Check(ctx)
	code := exitFor(err)
	if code == exitUsage {
		fmt.Fprintf(stderr, "runner plugins check: %v\n", err)
		return code
	}
	if *asJSON {
		rep := checkReport{Selection: sel, OK: err == nil}
		for _, e := range unwrapJoined(err) {
			rep.Errors = append(rep.Errors, e.Error())
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if werr := enc.Encode(rep); werr != nil {
			fmt.Fprintf(stderr, "runner plugins check: %v\n", werr)
			return exitUsage
		}
		return code
	}
	if werr := writeTable(stdout, sel, err); werr != nil {
		fmt.Fprintf(stderr, "runner plugins check: %v\n", werr)
		return exitUsage
	}
	return code
}
