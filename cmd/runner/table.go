package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/loader"
)

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeTable writes the candidate table of sel, then a line per selected
// plugin, then the selection's error, if any.
func writeTable(w io.Writer, sel *loader.Selection, err error) error {
	fmt.Fprintf(w, "plugins folder: %s\n\n", sel.Dir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PLUGIN\tVERSION\tKIND\tVERDICT\tSTAGE\tFILE\tREASON")
	for _, c := range sel.Candidates {
		v := ""
		if c.Version != nil {
			v = c.Version.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			dash(c.Name), dash(v), dash(string(c.Kind)), c.Verdict, dash(string(c.Stage)), c.File, loader.Plain(c.Reason))
	}
	if ferr := tw.Flush(); ferr != nil {
		return ferr
	}
	fmt.Fprintln(w)
	for _, c := range sel.Selected() {
		fmt.Fprintf(w, "selected: %s %s (%s) from %s\n", c.Name, c.Version, c.Kind, c.File)
	}
	for _, e := range loader.Errors(err) {
		fmt.Fprintf(w, "error: %v\n", e)
	}
	_, werr := fmt.Fprint(w)
	return werr
}

// exitFor maps a selection error to an exit status.
func exitFor(err error) int {
	switch {
	case err == nil:
		return exitcode.OK
	case errors.Is(err, loader.ErrNoAcceptable), errors.Is(err, loader.ErrNoCandidates):
		return exitcode.NoPlugin
	}
	return exitcode.NoInput
}
