package flagvalue_test

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/flagvalue"
)

func TestValues(t *testing.T) {
	var backoff time.Duration
	var ports flagvalue.PortRange
	var deaths flagvalue.DeathLimit
	var uids flagvalue.UIDs
	var keys flagvalue.Strings
	var size int64
	values := map[string]flag.Value{"ports": &ports, "deaths": &deaths, "uids": &uids, "keys": &keys, "backoff": flagvalue.PositiveDuration{D: &backoff},
		"size": flagvalue.Size{N: &size}}
	for _, tc := range []struct {
		flag, value, err string
	}{
		{"ports", "9100-9199", ""},
		{"ports", "1-65535", ""},
		{"ports", "0-10", `"0-10" is not a port range FIRST-LAST`},
		{"ports", "10-9", `"10-9" is not a port range`},
		{"ports", "1-65536", `"1-65536" is not a port range`},
		{"ports", "80", `"80" is not a port range`},
		{"deaths", "5/1m", ""},
		{"deaths", "0/1m", `"0/1m" is not N/DURATION with N at least 1`},
		{"deaths", "5/0s", `"5/0s" is not N/DURATION`},
		{"deaths", "5", `"5" is not N/DURATION`},
		{"uids", "0, 1000", ""},
		{"uids", "-1", `"-1" is not a user ID`},
		{"uids", "4294967296", `"4294967296" is not a user ID`},
		{"keys", "a.pub", ""},
		{"backoff", "100ms", ""},
		{"backoff", "0s", `"0s" is not a positive duration`},
		{"backoff", "-1s", `"-1s" is not a positive duration`},
		{"size", "1048576", ""},
		{"size", "1 GiB", ""},
		{"size", "0", `"0" is not a size above zero`},
		{"size", "-1GiB", `"-1GiB" is not a size above zero`},
		{"size", "1GB", `"1GB" is not a size above zero`},
		{"size", "9000000TiB", `"9000000TiB" is not a size above zero`},
		{"size", "GiB", `"GiB" is not a size above zero`},
	} {
		t.Run(tc.flag+"="+tc.value, func(t *testing.T) {
			err := values[tc.flag].Set(tc.value)
			if tc.err == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
		})
	}
	assert.Equal(t, "9100-9199", (&flagvalue.PortRange{9100, 9199}).String())
	assert.Equal(t, "", (&flagvalue.PortRange{}).String())
	assert.Equal(t, flagvalue.DeathLimit{Deaths: 5, Window: time.Minute}, deaths)
	assert.Equal(t, flagvalue.UIDs{0, 1000}, uids)
	assert.Equal(t, 100*time.Millisecond, backoff)
	assert.Equal(t, int64(1<<30), size, "the last size set")
	assert.Equal(t, "1GiB", flagvalue.Size{N: &size}.String())
	size = 1000
	assert.Equal(t, "1000B", flagvalue.Size{N: &size}.String())
}
