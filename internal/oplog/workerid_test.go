package oplog_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/soplug/soplug/internal/oplog"
)

// workerRule is CheckWorkerID's documented rule as a regular expression,
// which the check itself no longer compiles at start.
var workerRule = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func TestCheckWorkerID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"w", true},
		{"0", true},
		{"worker-1.a_b", true},
		{"a." + strings.Repeat("x", 126), true},
		{strings.Repeat("x", 128), true},
		{strings.Repeat("x", 129), false},
		{"", false},
		{"-w", false},
		{".w", false},
		{"_w", false},
		{"a b", false},
		{"a/b", false},
		{"a*", false},
		{"a>", false},
		{"a\x00", false},
		{"a\n", false},
		{"é", false},
		{"aé", false},
		{"a\xff", false},
	}
	for _, tc := range tests {
		err := oplog.CheckWorkerID(tc.id)
		if tc.ok {
			assert.NoError(t, err, "%q", tc.id)
		} else {
			assert.ErrorIs(t, err, oplog.ErrWorkerID, "%q", tc.id)
		}
		assert.Equal(t, workerRule.MatchString(tc.id), tc.ok, "the table agrees with the rule: %q", tc.id)
	}
}

// FuzzCheckWorkerID: the check accepts exactly what the rule does.
func FuzzCheckWorkerID(f *testing.F) {
	for _, s := range []string{"w", "a.b", "-a", strings.Repeat("x", 128), strings.Repeat("x", 129), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := oplog.CheckWorkerID(id) == nil, workerRule.MatchString(id); got != want {
			t.Fatalf("%q: check says %v, rule says %v", id, got, want)
		}
	})
}
