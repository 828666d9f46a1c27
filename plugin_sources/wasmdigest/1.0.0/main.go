// Command wasmdigest 1.0.0 is a Transformer plugin that records what it was
// given: it appends a custom section named "soplug.digest" holding
// "<algorithm>:<hex digest>\n" of every byte before that section. Installed
// after wasmtag in a chain, the digest covers the tagged binary, so a
// consumer can check that nothing changed after tagging.
//
// Config keys: "algorithm", sha256 (the default) or sha512; any other value
// is refused, and the request gets 422.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/wasm"
)

const version = "1.0.0"

type digester struct{}

func (digester) Version() string { return version }

func (digester) IsAcceptable() bool { return true }

func (digester) Transform(ctx context.Context, component []byte, cfg contract.Config) ([]byte, error) {
	if _, err := wasm.Check(component); err != nil {
		return nil, err
	}
	algo := cfg["algorithm"]
	var h hash.Hash
	switch algo {
	case "", "sha256":
		algo, h = "sha256", sha256.New()
	case "sha512":
		h = sha512.New()
	default:
		return nil, fmt.Errorf("wasmdigest: unknown algorithm %q (sha256 or sha512)", algo)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.Write(component)
	record := algo + ":" + hex.EncodeToString(h.Sum(nil)) + "\n"
	return wasm.AppendCustomSection(component, "soplug.digest", []byte(record)), nil
}

// Transformer is the accessor soplug looks up.
func Transformer() contract.Transformer { return digester{} }
