package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/wasm"
)

func TestTransform(t *testing.T) {
	module := []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00")
	out, err := Transformer().Transform(context.Background(), append([]byte{}, module...), contract.Config{"team": "edge", "env": "prod"})
	require.NoError(t, err)
	assert.Equal(t, module, out[:len(module)], "the module is kept as it was")
	_, err = wasm.Check(out)
	require.NoError(t, err)
	assert.Contains(t, string(out[len(module):]), "soplug.wasmtag"+"wasmtag 1.1.0\nenv=prod\nteam=edge\n")

	_, err = Transformer().Transform(context.Background(), []byte("(module)"), nil)
	assert.ErrorIs(t, err, wasm.ErrNotWasm)
}
