package wasm_test

import (
	"errors"
	"testing"

	"github.com/soplug/soplug/internal/wasm"
)

// FuzzCheck: Check never panics, rejects with its own errors, and a binary
// it accepts stays valid, of the same kind and with the same prefix, after a
// custom section is appended.
func FuzzCheck(f *testing.F) {
	f.Add(emptyModule)
	f.Add(typeModule)
	f.Add(emptyComponent)
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x00\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, data []byte) {
		kind, err := wasm.Check(data)
		if err != nil {
			if !errors.Is(err, wasm.ErrNotWasm) && !errors.Is(err, wasm.ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		out := wasm.AppendCustomSection(append([]byte(nil), data...), "fuzz", data)
		kind2, err := wasm.Check(out)
		if err != nil || kind2 != kind || string(out[:len(data)]) != string(data) {
			t.Fatalf("appending a section broke the binary: %v", err)
		}
	})
}
