package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/contract/golem"
	"github.com/soplug/soplug/internal/wasm"
)

var module = []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00")

func TestTransform(t *testing.T) {
	req := golem.NewRequest(golem.Metadata{ComponentID: "c-1", ComponentName: "shop:cart", Env: map[string]string{"STAGE": "blue", "REGION": "eu-1"}})
	ctx := golem.NewContext(context.Background(), req)
	out, err := Transformer().Transform(ctx, append([]byte{}, module...), contract.Config{"env_key": "STAGE"})
	require.NoError(t, err)
	rec, ok := wasm.CustomSection(out, "soplug.golem")
	require.True(t, ok)
	assert.Equal(t, "component=shop:cart\nid=c-1\nSTAGE=blue\n", string(rec))
	assert.Equal(t, []golem.File{{Path: "/soplug/transformed-by", Permissions: golem.ReadOnly, Content: []byte("golemmeta 1.0.0\n")}}, req.Files())
	assert.Equal(t, map[string]string{"SOPLUG_TRANSFORMED_BY": "golemmeta 1.0.0"}, req.Env())

	out, err = Transformer().Transform(context.Background(), append([]byte{}, module...), nil)
	require.NoError(t, err)
	rec, _ = wasm.CustomSection(out, "soplug.golem")
	assert.Equal(t, "component=-\n", string(rec), "a raw request has no metadata")
}
