// Command wasmtag 1.1.0 is a Transformer plugin: it checks that its input is
// a WebAssembly module or component and appends a custom section named
// "soplug.wasmtag" that records which plugin and version saw it and the
// installation's configuration, one key=value line each, sorted by key.
package main

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/wasm"
)

const version = "1.1.0"

type tagger struct{}

func (tagger) Version() string { return version }

func (tagger) IsAcceptable() bool { return true }

func (tagger) Transform(_ context.Context, component []byte, cfg contract.Config) ([]byte, error) {
	if _, err := wasm.Check(component); err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("wasmtag " + version + "\n")
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		b.WriteString(k + "=" + cfg[k] + "\n")
	}
	return wasm.AppendCustomSection(component, "soplug.wasmtag", []byte(b.String())), nil
}

// Transformer is the accessor soplug looks up.
func Transformer() contract.Transformer { return tagger{} }
