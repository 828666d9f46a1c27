package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/wasm"
)

func TestTransform(t *testing.T) {
	module := []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00")
	sum := sha256.Sum256(module)
	out, err := Transformer().Transform(context.Background(), append([]byte{}, module...), nil)
	require.NoError(t, err)
	assert.Equal(t, module, out[:len(module)], "the module is kept as it was")
	_, err = wasm.Check(out)
	require.NoError(t, err)
	assert.Contains(t, string(out[len(module):]), "soplug.digest"+"sha256:"+hex.EncodeToString(sum[:])+"\n")

	out, err = Transformer().Transform(context.Background(), append([]byte{}, module...), contract.Config{"algorithm": "sha512"})
	require.NoError(t, err)
	assert.Contains(t, string(out[len(module):]), "sha512:")

	_, err = Transformer().Transform(context.Background(), module, contract.Config{"algorithm": "md5"})
	assert.ErrorContains(t, err, `unknown algorithm "md5"`)
	_, err = Transformer().Transform(context.Background(), module[:10], nil)
	assert.ErrorIs(t, err, wasm.ErrMalformed)
}
