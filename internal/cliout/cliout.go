// Package cliout is what the runner's commands print: the candidate table
// of a selection, a diagnosis's checks, the configuration each plugin gets,
// and the JSON forms of their results. cmd/runner parses flags and wires
// packages together; how a result reads is decided here, in one place, and
// the README's checked examples (cmd/runner's TestReadme) hold it to what
// the README shows.
package cliout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/soplug/soplug/internal/deploy"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/pluginconf"
	"github.com/soplug/soplug/loader"
)

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Table writes the candidate table of sel, then a line per selected
// plugin, then each of the selection's errors.
func Table(w io.Writer, sel *loader.Selection, err error) error {
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

// Config says what configuration each selected plugin gets, and the
// transform chain.
func Config(w io.Writer, conf *pluginconf.File, sel *loader.Selection) {
	from := conf.Path
	if from == "" {
		from = "no --config file"
	}
	fmt.Fprintf(w, "\nconfiguration (%s):\n", from)
	for _, c := range sel.Selected() {
		fmt.Fprintf(w, "  %s: %s\n", c.Name, Installation(conf.For(c.Name)))
	}
	if len(conf.Chain) > 0 {
		fmt.Fprintf(w, "  chain for POST /v1/transform: %s\n", strings.Join(conf.Chain, " -> "))
	}
}

// Installation says what configuration a plugin gets: "env=prod team=edge
// (a request may set: env)".
func Installation(in pluginconf.Installation) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(in.Config)) {
		parts = append(parts, k+"="+in.Config[k])
	}
	s := strings.Join(parts, " ")
	if s == "" {
		s = "(none)"
	}
	switch {
	case slices.Contains(in.Overridable, pluginconf.AnyKey):
		s += " (a request may set any key)"
	case len(in.Overridable) > 0:
		s += fmt.Sprintf(" (a request may set: %s)", strings.Join(in.Overridable, ", "))
	}
	return s
}

// CheckReport is the JSON form of `plugins check`.
type CheckReport struct {
	*loader.Selection
	OK     bool     `json:"ok"`
	Errors []string `json:"errors,omitempty"`
	// Config is what each selected plugin is given, by name.
	Config map[string]pluginconf.Installation `json:"config"`
	// Chain is the order POST /v1/transform runs transformers in.
	Chain []string `json:"chain,omitempty"`
}

// NewCheckReport is the report of a check that selected sel, with err.
func NewCheckReport(sel *loader.Selection, conf *pluginconf.File, err error) CheckReport {
	rep := CheckReport{Selection: sel, OK: err == nil, Config: map[string]pluginconf.Installation{}, Chain: conf.Chain}
	for _, c := range sel.Selected() {
		rep.Config[c.Name] = conf.For(c.Name)
	}
	for _, e := range loader.Errors(err) {
		rep.Errors = append(rep.Errors, e.Error())
	}
	return rep
}

// Steps writes a diagnosis as a table of its checks.
func Steps(w io.Writer, d loader.Diagnosis) {
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

// Diagnosis writes what `plugins why` prints: the checks, the build's
// differences from the runner, and the verdict.
func Diagnosis(w io.Writer, d loader.Diagnosis) {
	Steps(w, d)
	if d.Build != nil && len(d.Build.Differences) > 0 {
		fmt.Fprintln(w, "\nbuild differences from the runner:")
		for _, diff := range d.Build.Differences {
			fmt.Fprintf(w, "  %s\n", diff)
		}
		for _, c := range d.Build.Conflicts {
			fmt.Fprintf(w, "  conflict: %s\n", c)
		}
	}
	if d.Acceptable {
		fmt.Fprintf(w, "\nverdict: acceptable\n")
		return
	}
	reason := ""
	for _, s := range d.Steps {
		if s.Result == "failed" {
			reason = s.Detail
			break
		}
	}
	fmt.Fprintf(w, "\nverdict: rejected: %s\n", loader.Plain(reason))
}

// Installed says where install put the plugin, in the plugins folder dir.
func Installed(w io.Writer, res deploy.Installed, dir string) {
	verb := "installed"
	if res.Replaced {
		verb = "replaced"
	}
	fmt.Fprintf(w, "%s %s %s (%s) as %s\n", verb, res.Name, res.Version, res.Kind, filepath.Join(dir, res.File))
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// Removed says what remove took out of the folder and what the daemon
// serves of plugin name afterwards.
func Removed(w io.Writer, name string, res deploy.Removed) {
	fmt.Fprintf(w, "removed %s\n", strings.Join(append(slices.Clone(res.Files), res.Signatures...), ", "))
	switch {
	case res.Next == "":
		fmt.Fprintf(w, "%s now has no acceptable version: the daemon will serve none of it\n", name)
	case res.Next == res.Active:
		fmt.Fprintf(w, "the daemon keeps serving %s %s (%s)\n", name, res.Next, res.NextFile)
	default:
		fmt.Fprintf(w, "the daemon falls back to %s %s (%s) at its restart\n", name, res.Next, res.NextFile)
	}
}

// Repaired says what `oplog repair` cut.
func Repaired(w io.Writer, r oplog.Repaired) {
	entries := fmt.Sprintf("%d entries", r.DroppedEntries)
	if r.DroppedEntries < 0 {
		entries = "entries not counted"
	}
	fmt.Fprintf(w, "%s: cut at offset %d, after entry %d, the last good one: dropped %d bytes (%s)\n",
		filepath.Base(r.Path), r.Offset, r.LastGood, r.DroppedBytes, entries)
	fmt.Fprintf(w, "the corruption: %s\n", strings.ReplaceAll(r.Reason, filepath.Dir(r.Path)+string(filepath.Separator), ""))
	fmt.Fprintf(w, "the worker's next append starts at index %d; delivery goes on by itself\n", r.LastGood+1)
}

// JSON writes v as indented JSON.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Result writes a command's result v (a struct) as one JSON object with
// "ok" and, on failure, "error" beside v's fields. Integers pass exactly
// (an int64 size or time in ns does not go through a float64).
func Result(w io.Writer, v any, err error) error {
	fields := map[string]any{}
	if data, merr := json.Marshal(v); merr == nil {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		_ = dec.Decode(&fields)
	}
	fields["ok"] = err == nil
	if err != nil {
		fields["error"] = err.Error()
	}
	return JSON(w, fields)
}
