package loader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	version "github.com/hashicorp/go-version"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/loader/buildcheck"
	"github.com/soplug/soplug/loader/probe"
)

// Step is one check of a diagnosis and its outcome.
type Step struct {
	// Stage is the selection stage the check belongs to.
	Stage Stage `json:"stage"`
	// Check names the check.
	Check string `json:"check"`
	// Result is "ok", "failed" or "skipped".
	Result string `json:"result"`
	// Detail says what was found, or why it failed or was skipped.
	Detail string `json:"detail,omitempty"`
	// Err is the failure, wrapping one of the Err* sentinels.
	Err error `json:"-"`
}

// Diagnosis is every check of one candidate file, in the order the loader
// runs them; unlike a selection, it goes on past a failure wherever the
// next check can still say something.
type Diagnosis struct {
	// Path is the file diagnosed.
	Path string `json:"path"`
	// Name and Version are the plugin's, from the file name (or the
	// caller), confirmed or corrected by the probe.
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	// Kind is the plugin's kind, when the probe got that far.
	Kind contract.Kind `json:"kind,omitempty"`
	// Steps are the checks in order.
	Steps []Step `json:"steps"`
	// Build is the comparison with the runner's build, when both were
	// readable.
	Build *buildcheck.Report `json:"build,omitempty"`
	// Acceptable is true when every check passed: the loader would select
	// this file if no newer version were acceptable.
	Acceptable bool `json:"acceptable"`
}

// Loadable reports whether every failed check is ErrNotAcceptable: the
// runner can open the file, and only IsAcceptable() said no on this host.
// A release meant for other hosts (a GPU, a kernel feature) is such a file
// on a build machine; the runner on the target host decides.
func (d *Diagnosis) Loadable() bool {
	failed := false
	for _, s := range d.Steps {
		if s.Result == "failed" {
			if !errors.Is(s.Err, ErrNotAcceptable) {
				return false
			}
			failed = true
		}
	}
	return failed || d.Acceptable
}

// Err returns the first failure, or nil.
func (d *Diagnosis) Err() error {
	for _, s := range d.Steps {
		if s.Result == "failed" {
			return s.Err
		}
	}
	return nil
}

func (d *Diagnosis) add(stage Stage, check string, err error, detail string) bool {
	s := Step{Stage: stage, Check: check, Result: "ok", Detail: detail}
	if err != nil {
		s.Result, s.Err = "failed", err
		var rerr *RejectError
		if errors.As(err, &rerr) {
			s.Detail = rerr.Err.Error()
		} else {
			s.Detail = err.Error()
		}
	}
	d.Steps = append(d.Steps, s)
	return err == nil
}

func (d *Diagnosis) skip(stage Stage, check, why string) {
	d.Steps = append(d.Steps, Step{Stage: stage, Check: check, Result: "skipped", Detail: why})
}

// Diagnose runs every check of the selection on the file at path, without
// loading it into this process. name and v, when given, stand for what the
// file's name would say (a file not yet named <name>_v<semver>.so); a file
// whose name parses is checked against them.
func (l *Loader) Diagnose(ctx context.Context, path, name string, v *version.Version) Diagnosis {
	backend := Native
	if _, _, b, err := ParseName(filepath.Base(path)); err == nil {
		backend = b
	} else if fi, err := os.Stat(path); err == nil && !strings.HasSuffix(path, Suffix) && fi.Mode().Perm()&0o100 != 0 {
		backend = Process // an executable not yet named
	}
	return l.DiagnoseAs(ctx, path, name, v, backend)
}

// DiagnoseAs is Diagnose of a file that runs with backend, whatever its
// name says (a copy under a temporary name).
func (l *Loader) DiagnoseAs(ctx context.Context, path, name string, v *version.Version, backend Backend) Diagnosis {
	d := Diagnosis{Path: path}
	fname, fv, _, nerr := ParseName(filepath.Base(path))
	switch {
	case nerr == nil && ((name != "" && name != fname) || (v != nil && !v.Equal(fv))):
		d.add(StageDiscover, "file name", reject(path, StageDiscover, ErrBadName,
			"the file name says %s %s, not %s %s", fname, fv, name, v), "")
	case nerr == nil:
		name, v = fname, fv
		d.add(StageDiscover, "file name", nil, fmt.Sprintf("plugin %s, version %s", name, v))
	case name == "":
		d.add(StageDiscover, "file name", nerr, "")
	case v == nil:
		d.add(StageDiscover, "file name", nil, fmt.Sprintf("plugin %s as given; the version comes from Version()", name))
	default:
		d.add(StageDiscover, "file name", nil, fmt.Sprintf("plugin %s, version %s, as given", name, v))
	}
	d.Name = name
	if v != nil {
		d.Version = v.String()
	}
	c := &Candidate{File: filepath.Base(path), Path: path, Name: name, Version: v, Backend: backend}

	admit := func() {
		if l.cfg.Admit == nil || c.Name == "" || c.Version == nil {
			return
		}
		if err := l.cfg.Admit(c); err != nil {
			d.add(StageAdmit, "admission (trust, quarantine)", reject(path, StageAdmit, ErrNotAdmitted, "%v", err), "")
		} else {
			d.add(StageAdmit, "admission (trust, quarantine)", nil, "admitted")
		}
	}
	if v != nil {
		admit()
	}

	var rep probe.Report
	var err error
	if backend == Process {
		if !d.add(StageCheck, "ELF executable for this machine, complete, a Go program", CheckExecutable(path), "") {
			d.skip(StageProbe, "start the plugin process", "the file failed its checks")
			return d
		}
		rep, err = l.probeProcess(ctx, c)
		d.Kind = rep.Kind
		if !d.add(StageProbe, "start it, go-plugin handshake, Kind(), Version(), IsAcceptable() over gRPC", err,
			fmt.Sprintf("a %s, Version() %q, acceptable", rep.Kind, rep.Version)) && !notHere(err, rep) {
			return d
		}
	} else {
		checked := d.add(StageCheck, "ELF shared object for this machine, complete, a Go plugin", CheckFile(path), "")
		d.build(l, path, checked)
		if !checked {
			d.skip(StageProbe, "probe in a child process", "the file failed its checks; opening it could fault")
			return d
		}
		rep, err = l.cfg.Prober.Probe(ctx, path)
		d.Kind = rep.Kind
		if !d.add(StageProbe, "probe in a child process: open, accessor, Version(), IsAcceptable()", err,
			fmt.Sprintf("a %s, Version() %q, acceptable", rep.Kind, rep.Version)) && !notHere(err, rep) {
			return d
		}
	}
	if v == nil {
		d.add(StageProbe, "Version() matches the file name", nil, "no version to match; taking "+rep.Version)
		if pv, err := version.NewSemver(rep.Version); err == nil {
			d.Version = pv.String()
			c.Version = pv
			admit() // now that the version, and so the canonical name, is known
		}
	} else {
		d.add(StageProbe, "Version() matches the file name", matchVersion(c, rep, StageProbe), rep.Version)
	}
	d.Acceptable = d.Err() == nil
	return d
}

// notHere reports whether a probe failed only because IsAcceptable() is
// false on this host, with the version known: the version checks still
// run, so that Loadable can say the file is otherwise fine.
func notHere(err error, rep probe.Report) bool {
	return errors.Is(err, ErrNotAcceptable) && rep.Version != ""
}

// build adds the build comparison step.
func (d *Diagnosis) build(l *Loader, path string, elfOK bool) {
	const check = "built like the runner (package hashes, Go version, settings, modules)"
	if !elfOK {
		d.skip(StageCheck, check, "not a readable Go plugin")
		return
	}
	runner, err := l.runner()
	if err != nil {
		d.skip(StageCheck, check, err.Error())
		return
	}
	plugin, err := buildcheck.Read(path)
	if err != nil {
		d.add(StageCheck, check, reject(path, StageCheck, ErrNotPlugin, "%v", err), "")
		return
	}
	rep := buildcheck.Compare(plugin, runner)
	d.Build = &rep
	if !rep.Compatible() {
		d.add(StageCheck, check, reject(path, StageCheck, ErrBuildMismatch, "%s", rep.Summary()), "")
		return
	}
	detail := fmt.Sprintf("%d shared packages compiled alike", rep.Checked)
	if len(runner.PkgHashes) == 0 {
		detail = "not compared: the runner carries no package hashes"
	}
	d.add(StageCheck, check, nil, detail)
}
