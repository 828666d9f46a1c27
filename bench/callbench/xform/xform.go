// Package xform is the one Transformer body the call-overhead benchmarks
// call four ways: linked statically, loaded from a .so, and served by
// hashicorp/go-plugin over net/rpc and over gRPC. It checks the WebAssembly
// preamble and section layout of its input and returns it unchanged, so
// that what is measured is the call, not the work.
package xform

import (
	"context"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/wasm"
)

// Checker is the benchmarked Transformer.
type Checker struct{}

// Version returns "1.0.0".
func (Checker) Version() string { return "1.0.0" }

// IsAcceptable returns true.
func (Checker) IsAcceptable() bool { return true }

// Transform checks component and returns it.
func (Checker) Transform(_ context.Context, component []byte, _ contract.Config) ([]byte, error) {
	if _, err := wasm.Check(component); err != nil {
		return nil, err
	}
	return component, nil
}

// Component returns a valid WebAssembly module of exactly n bytes (n >= 12):
// the preamble and one custom section filling the rest.
func Component(n int) []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	for payload := n - len(b) - 3; payload >= 0; payload-- {
		out := wasm.AppendCustomSection(append([]byte(nil), b...), "x", make([]byte, payload))
		if len(out) == n {
			return out
		}
		if len(out) < n {
			break
		}
	}
	panic("xform: no component of that size")
}
