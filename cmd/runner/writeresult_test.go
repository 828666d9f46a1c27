package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestWriteResultKeepsIntegers: a result's int64 fields come out exactly.
func TestWriteResultKeepsIntegers(t *testing.T) {
	var out bytes.Buffer
	writeResult(&out, struct {
		Big int64 `json:"big"`
	}{Big: 1<<62 + 1}, nil)
	assert.Contains(t, out.String(), `"big": 4611686018427387905`)
	assert.Contains(t, out.String(), `"ok": true`)
}
