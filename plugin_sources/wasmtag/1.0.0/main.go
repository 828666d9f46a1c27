// Command wasmtag 1.0.0 is a Transformer plugin: it checks that its input is
// a WebAssembly module or component and appends a custom section named
// "soplug.wasmtag" that records which plugin and version saw it.
package main

import (
	"context"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/wasm"
)

const version = "1.0.0"

type tagger struct{}

func (tagger) Version() string { return version }

func (tagger) IsAcceptable() bool { return true }

func (tagger) Transform(_ context.Context, component []byte, _ contract.Config) ([]byte, error) {
	if _, err := wasm.Check(component); err != nil {
		return nil, err
	}
	return wasm.AppendCustomSection(component, "soplug.wasmtag", []byte("wasmtag "+version)), nil
}

// Transformer is the accessor soplug looks up.
func Transformer() contract.Transformer { return tagger{} }
