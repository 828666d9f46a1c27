// Package probe opens a plugin and interrogates it, and is the child-process
// side of the loader's preflight.
//
// The loader never dlopens an untried file in the daemon: it re-executes the
// daemon's own binary with Arg as its first argument, and that process calls
// Main, which runs Inspect on the file and reports each step as a line of
// JSON on the report pipe (file descriptor 3). If the plugin's init panics,
// exits, faults or hangs, only the child dies, and the last step it reported
// tells the parent where. The winner is then opened in the daemon with the
// same Inspect.
package probe

import (
	"context"
	"errors"
	"fmt"
	"plugin"

	"github.com/soplug/soplug/contract"
)

// Step names a step of Inspect, reported before the step starts.
type Step string

// The steps of Inspect, in order.
const (
	StepOpen       Step = "open"
	StepLookup     Step = "lookup"
	StepAccessor   Step = "accessor"
	StepVersion    Step = "version"
	StepAcceptable Step = "acceptable"
)

// Doing returns what the plugin was doing during the step, for reasons.
func (s Step) Doing() string {
	switch s {
	case StepOpen:
		return "while opening the plugin (running its init)"
	case StepLookup:
		return "while looking up its accessor"
	case StepAccessor:
		return "while calling its accessor"
	case StepVersion:
		return "while calling Version()"
	case StepAcceptable:
		return "while calling IsAcceptable()"
	}
	return "before the probe opened the plugin"
}

// Code classifies why Inspect refused a plugin.
type Code string

// The codes of Error.
const (
	CodeOpen          Code = "open"
	CodeNoAccessor    Code = "no-accessor"
	CodeAccessorType  Code = "accessor-type"
	CodeNil           Code = "nil"
	CodePanic         Code = "panic"
	CodeTimeout       Code = "timeout"
	CodeNotAcceptable Code = "not-acceptable"
	CodeUsage         Code = "usage"
)

// Error is Inspect's refusal of a plugin.
type Error struct {
	// Code classifies the refusal.
	Code Code `json:"code"`
	// Step is the step that failed.
	Step Step `json:"step"`
	// Msg describes it.
	Msg string `json:"msg"`
	// Err is the underlying error, when there is one in this process.
	Err error `json:"-"`
}

// Error returns Msg.
func (e *Error) Error() string { return e.Msg }

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// Report is what Inspect learned of an acceptable plugin.
type Report struct {
	// Kind is the plugin's kind, from the accessor it exports.
	Kind contract.Kind `json:"kind"`
	// Version is what the plugin's Version() returned.
	Version string `json:"version"`
	// Plugin is the value the accessor returned: a contract.Transformer or
	// a contract.OplogProcessor. Only set in the process that opened it.
	Plugin contract.Plugin `json:"-"`
}

// Opener opens a plugin file; plugin.Open is the real one. The loader wraps
// it to guarantee one open per path per process.
type Opener func(path string) (*plugin.Plugin, error)

// Inspect opens the plugin at path with open, finds its accessor, calls it,
// and asks the plugin its Version and whether it IsAcceptable. It calls step
// before each step. A panic in the plugin during any step is recovered and
// reported; the calls into the plugin are abandoned when ctx ends (a call
// that never returns leaves its goroutine behind, which is why the loader
// runs Inspect in a child first). The error is an *Error.
func Inspect(ctx context.Context, path string, open Opener, step func(Step)) (Report, error) {
	var rep Report
	step(StepOpen)
	var p *plugin.Plugin
	if err := call(ctx, StepOpen, func() (err error) { p, err = open(path); return err }); err != nil {
		var perr *Error
		if errors.As(err, &perr) {
			return rep, perr
		}
		return rep, &Error{Code: CodeOpen, Step: StepOpen, Msg: err.Error(), Err: err}
	}

	step(StepLookup)
	kind, get, err := accessor(p)
	if err != nil {
		return rep, err
	}
	rep.Kind = kind

	step(StepAccessor)
	if err := call(ctx, StepAccessor, func() error { rep.Plugin = get(); return nil }); err != nil {
		return rep, err
	}
	if rep.Plugin == nil {
		return rep, &Error{Code: CodeNil, Step: StepAccessor, Msg: fmt.Sprintf("%s() returned nil", accessorName(kind))}
	}

	step(StepVersion)
	if err := call(ctx, StepVersion, func() error { rep.Version = rep.Plugin.Version(); return nil }); err != nil {
		return rep, err
	}

	step(StepAcceptable)
	var ok bool
	if err := call(ctx, StepAcceptable, func() error { ok = rep.Plugin.IsAcceptable(); return nil }); err != nil {
		return rep, err
	}
	if !ok {
		return rep, &Error{Code: CodeNotAcceptable, Step: StepAcceptable, Msg: "IsAcceptable() returned false"}
	}
	return rep, nil
}

// accessor finds the one accessor p exports and returns a func that calls
// it.
func accessor(p *plugin.Plugin) (contract.Kind, func() contract.Plugin, error) {
	tsym, terr := p.Lookup(contract.TransformerAccessor)
	osym, oerr := p.Lookup(contract.OplogProcessorAccessor)
	switch {
	case terr == nil && oerr == nil:
		return "", nil, &Error{Code: CodeAccessorType, Step: StepLookup, Msg: fmt.Sprintf(
			"it exports both %s and %s; a plugin is of one kind", contract.TransformerAccessor, contract.OplogProcessorAccessor)}
	case terr == nil:
		switch f := tsym.(type) {
		case func() contract.Transformer:
			return contract.KindTransformer, func() contract.Plugin {
				if t := f(); t != nil {
					return t
				}
				return nil
			}, nil
		case *contract.Transformer:
			return "", nil, variableError(contract.TransformerAccessor, "contract.Transformer", tsym)
		default:
			return "", nil, typeError(contract.TransformerAccessor, "contract.Transformer", tsym)
		}
	case oerr == nil:
		switch f := osym.(type) {
		case func() contract.OplogProcessor:
			return contract.KindOplogProcessor, func() contract.Plugin {
				if o := f(); o != nil {
					return o
				}
				return nil
			}, nil
		case *contract.OplogProcessor:
			return "", nil, variableError(contract.OplogProcessorAccessor, "contract.OplogProcessor", osym)
		default:
			return "", nil, typeError(contract.OplogProcessorAccessor, "contract.OplogProcessor", osym)
		}
	}
	return "", nil, &Error{Code: CodeNoAccessor, Step: StepLookup, Msg: fmt.Sprintf(
		"it exports neither func %s() contract.Transformer nor func %s() contract.OplogProcessor",
		contract.TransformerAccessor, contract.OplogProcessorAccessor)}
}

// accessorName returns the accessor symbol of kind.
func accessorName(kind contract.Kind) string {
	if kind == contract.KindOplogProcessor {
		return contract.OplogProcessorAccessor
	}
	return contract.TransformerAccessor
}

func variableError(name, iface string, sym plugin.Symbol) error {
	return &Error{Code: CodeAccessorType, Step: StepLookup, Msg: fmt.Sprintf(
		"%s is an exported variable (%T); export func %s() %s instead", name, sym, name, iface)}
}

func typeError(name, iface string, sym plugin.Symbol) error {
	return &Error{Code: CodeAccessorType, Step: StepLookup, Msg: fmt.Sprintf(
		"%s has type %T, want func() %s", name, sym, iface)}
}

// call runs fn, turning a panic into a CodePanic error and an end of ctx
// into a CodeTimeout error.
func call(ctx context.Context, step Step, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- &Error{Code: CodePanic, Step: step, Msg: fmt.Sprintf("%v (%s)", p, step.Doing())}
			}
		}()
		done <- fn()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return &Error{Code: CodeTimeout, Step: step, Msg: fmt.Sprintf("no answer %s: %v", step.Doing(), context.Cause(ctx))}
	}
}
