package natsjournal

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestCheckServerVersion: nats-server 2.12 and later pass (pre-releases
// of them too); older ones and versions that do not parse are
// ErrServerVersion naming what is needed.
func TestCheckServerVersion(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"2.15.3", true},
		{"2.12.0", true},
		{"2.12.0-RC.1", true},
		{"3.0.0", true},
		{"2.11.9", false},
		{"2.10.22", false},
		{"1.4.1", false},
		{"", false},
		{"not a version", false},
	} {
		err := checkServerVersion(tc.v)
		if tc.ok {
			assert.NoError(t, err, tc.v)
			continue
		}
		assert.ErrorIs(t, err, ErrServerVersion, tc.v)
		assert.ErrorContains(t, err, "2.12.0 or later is needed", tc.v)
	}
}
