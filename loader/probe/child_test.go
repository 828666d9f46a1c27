package probe

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// final decodes the last Message a child wrote.
func final(t *testing.T, out *bytes.Buffer) Message {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var m Message
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &m), out.String())
	require.True(t, m.Done, out.String())
	return m
}

// TestPathFromStdin: with PATH "-" the child reads the path from its
// standard input, one line; without one it is a usage error, not a hang
// or an open of "".
func TestPathFromStdin(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "p_v1.0.0.so")
	tests := []struct {
		name  string
		stdin string
		code  int
		want  Code
		msg   string
	}{
		{"a path", missing + "\n", 0, CodeOpen, missing},
		{"nothing", "", 2, CodeUsage, "no path on standard input"},
		{"no newline", missing, 2, CodeUsage, "no path on standard input"},
		{"an empty line", "\n", 2, CodeUsage, "no path on standard input"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			code := run([]string{"-timeout", "5s", StdinPath}, strings.NewReader(tc.stdin), &out)
			assert.Equal(t, tc.code, code)
			m := final(t, &out)
			require.NotNil(t, m.Error)
			assert.Equal(t, tc.want, m.Error.Code)
			assert.Contains(t, m.Error.Msg, tc.msg)
		})
	}
}
