// Command wasmtag 2.0.0 is a Transformer plugin that writes its record as
// JSON, a format not every consumer reads yet. It is therefore only
// acceptable on hosts that opted in by setting SOPLUG_WASMTAG_V2=1 in the
// daemon's environment; elsewhere soplug falls back to 1.1.0.
package main

import (
	"context"
	"encoding/json"
	"os"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/wasm"
)

const version = "2.0.0"

type tagger struct{}

func (tagger) Version() string { return version }

func (tagger) IsAcceptable() bool { return os.Getenv("SOPLUG_WASMTAG_V2") == "1" }

func (tagger) Transform(_ context.Context, component []byte, cfg contract.Config) ([]byte, error) {
	if _, err := wasm.Check(component); err != nil {
		return nil, err
	}
	record, err := json.Marshal(struct {
		Plugin  string            `json:"plugin"`
		Version string            `json:"version"`
		Config  map[string]string `json:"config,omitempty"`
	}{"wasmtag", version, cfg})
	if err != nil {
		return nil, err
	}
	return wasm.AppendCustomSection(component, "soplug.wasmtag", record), nil
}

// Transformer is the accessor soplug looks up.
func Transformer() contract.Transformer { return tagger{} }
