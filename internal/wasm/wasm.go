// Package wasm reads and extends the outer structure of WebAssembly
// binaries, core modules and components alike: the preamble and the
// sequence of sections. It does not decode section contents.
package wasm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Magic is the four bytes every WebAssembly binary starts with.
var Magic = []byte{0x00, 'a', 's', 'm'}

// Kind says whether a binary is a core module or a component.
type Kind int

// The kinds of binary, told apart by the version and layer fields of the
// preamble.
const (
	Module    Kind = 1 // version 1, layer 0
	Component Kind = 2 // version 0x0d, layer 1
)

// String returns "module" or "component".
func (k Kind) String() string {
	if k == Component {
		return "component"
	}
	return "module"
}

// Errors of Check, wrapped with the offset and detail.
var (
	// ErrNotWasm: the input does not start with the preamble of a module or
	// component.
	ErrNotWasm = errors.New("wasm: not a WebAssembly binary")
	// ErrMalformed: a section runs past the end of the input or its size
	// cannot be read.
	ErrMalformed = errors.New("wasm: malformed section")
)

// CheckPreamble verifies that b starts with the preamble of a core module
// or a component, and returns which: the magic and the version/layer
// fields, eight bytes, without looking at the sections.
func CheckPreamble(b []byte) (Kind, error) {
	if len(b) < 8 || !bytes.Equal(b[:4], Magic) {
		return 0, fmt.Errorf("%w: no \\0asm magic", ErrNotWasm)
	}
	switch v := binary.LittleEndian.Uint32(b[4:8]); v {
	case 0x00000001:
		return Module, nil
	case 0x0001000d:
		return Component, nil
	default:
		return 0, fmt.Errorf("%w: unknown version/layer 0x%08x", ErrNotWasm, v)
	}
}

// Check verifies the preamble and that the sections tile the rest of b
// exactly, and returns the binary's kind.
func Check(b []byte) (Kind, error) {
	return walk(b, func(byte, []byte) {})
}

// CustomSection returns the payload of the first custom section of b named
// name, and whether there is one. b must pass Check.
func CustomSection(b []byte, name string) ([]byte, bool) {
	var payload []byte
	found := false
	_, _ = walk(b, func(id byte, content []byte) {
		if id != 0 || found {
			return
		}
		n, m := binary.Uvarint(content)
		if m > 0 && n <= uint64(len(content)-m) && string(content[m:m+int(n)]) == name {
			payload, found = content[m+int(n):], true
		}
	})
	return payload, found
}

// walk checks b as Check does, calling fn with each section's id and
// content in order.
func walk(b []byte, fn func(id byte, content []byte)) (Kind, error) {
	kind, err := CheckPreamble(b)
	if err != nil {
		return 0, err
	}
	for off := 8; off < len(b); {
		id := b[off]
		size, n := binary.Uvarint(b[off+1:])
		if n <= 0 || n > 5 {
			return 0, fmt.Errorf("%w: section id %d at offset %d has an unreadable size", ErrMalformed, id, off)
		}
		start := off + 1 + n
		if size > uint64(len(b)-start) {
			return 0, fmt.Errorf("%w: section id %d at offset %d claims %d bytes, %d remain", ErrMalformed, id, off, size, len(b)-start)
		}
		off = start + int(size)
		fn(id, b[start:off])
	}
	return kind, nil
}

// AppendCustomSection appends a custom section (id 0) with the given name
// and payload to the binary b and returns the extended slice, which shares
// b's array when it has the room.
func AppendCustomSection(b []byte, name string, payload []byte) []byte {
	content := uint64(uvarintLen(uint64(len(name))) + len(name) + len(payload))
	b = append(b, 0)
	b = binary.AppendUvarint(b, content)
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	return append(b, payload...)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}
