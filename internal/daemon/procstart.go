package daemon

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// ProcessStart is when this process was started, from /proc/self/stat; now
// when it cannot be read. The daemon's first record says how long after its
// exec it came (a restart's cost before main).
func ProcessStart() time.Time {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return time.Now()
	}
	// The command may hold spaces: the fields start after its ')'.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(f) < 20 {
		return time.Now()
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64) // starttime, field 22
	if err != nil {
		return time.Now()
	}
	up, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return time.Now()
	}
	uptime, err := strconv.ParseFloat(strings.Fields(string(up))[0], 64)
	if err != nil {
		return time.Now()
	}
	const hz = 100 // USER_HZ on Linux
	age := time.Duration((uptime - float64(ticks)/hz) * float64(time.Second))
	return time.Now().Add(-age)
}
