package wasm_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/wasm"
)

var (
	// emptyModule is (module): the preamble alone.
	emptyModule = []byte("\x00asm\x01\x00\x00\x00")
	// typeModule is (module (type (func))): one type section.
	typeModule = []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00")
	// emptyComponent is (component).
	emptyComponent = []byte("\x00asm\x0d\x00\x01\x00")
)

func TestCheck(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		kind wasm.Kind
		err  error
	}{
		{"empty module", emptyModule, wasm.Module, nil},
		{"module with a section", typeModule, wasm.Module, nil},
		{"empty component", emptyComponent, wasm.Component, nil},
		{"nothing", nil, 0, wasm.ErrNotWasm},
		{"text", []byte("(module)"), 0, wasm.ErrNotWasm},
		{"unknown version", []byte("\x00asm\x02\x00\x00\x00"), 0, wasm.ErrNotWasm},
		{"section past the end", typeModule[:len(typeModule)-1], 0, wasm.ErrMalformed},
		{"unterminated size", append(append([]byte{}, emptyModule...), 1, 0x80, 0x80), 0, wasm.ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kind, err := wasm.Check(tc.in)
			if tc.err != nil {
				assert.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.kind, kind)
		})
	}
}

func TestAppendCustomSection(t *testing.T) {
	long := make([]byte, 300) // a size that needs two LEB128 bytes
	for _, in := range [][]byte{emptyModule, typeModule, emptyComponent} {
		out := wasm.AppendCustomSection(append([]byte{}, in...), "soplug.test", long)
		assert.Equal(t, in, out[:len(in)], "the original bytes are kept")
		_, err := wasm.Check(out)
		require.NoError(t, err)
		tail := out[len(in):]
		assert.Equal(t, []byte{0x00, 0xb8, 0x02, 11}, tail[:4], "id 0, size 1+11+300=312, name length 11")
		assert.Equal(t, "soplug.test", string(tail[4:15]))
		assert.Len(t, tail, 4+11+300)
	}
}

func TestCustomSection(t *testing.T) {
	b := wasm.AppendCustomSection(append([]byte{}, typeModule...), "first", []byte("one"))
	b = wasm.AppendCustomSection(b, "second", []byte("two"))
	b = wasm.AppendCustomSection(b, "first", []byte("again"))
	got, ok := wasm.CustomSection(b, "first")
	assert.True(t, ok)
	assert.Equal(t, "one", string(got), "the first of two sections of one name")
	got, ok = wasm.CustomSection(b, "second")
	assert.True(t, ok)
	assert.Equal(t, "two", string(got))
	_, ok = wasm.CustomSection(b, "third")
	assert.False(t, ok)
	_, ok = wasm.CustomSection([]byte("not wasm"), "first")
	assert.False(t, ok)
}

func TestCheckPreamble(t *testing.T) {
	kind, err := wasm.CheckPreamble(typeModule[:len(typeModule)-1])
	require.NoError(t, err, "the preamble alone is checked")
	assert.Equal(t, wasm.Module, kind)
	kind, err = wasm.CheckPreamble(emptyComponent)
	require.NoError(t, err)
	assert.Equal(t, wasm.Component, kind)
	_, err = wasm.CheckPreamble([]byte("\x00asm\x02\x00\x00\x00"))
	assert.ErrorIs(t, err, wasm.ErrNotWasm)
}
