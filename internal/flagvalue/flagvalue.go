// Package flagvalue holds the flag.Value types of the runner's command line
// whose parsing is more than the flag package's: repeatable lists, a port
// range, a death limit, a positive duration. Each Set refuses a bad value
// with an error that says what a good one looks like; the flag package
// names the flag.
package flagvalue

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Strings is a repeatable string flag.
type Strings []string

// String returns the values joined by commas.
func (l *Strings) String() string { return strings.Join(*l, ",") }

// Set appends v.
func (l *Strings) Set(v string) error { *l = append(*l, v); return nil }

// UIDs is a repeatable, or comma-separated, user ID flag.
type UIDs []uint32

// String returns the IDs.
func (l *UIDs) String() string { return fmt.Sprint(*l) }

// Set appends the comma-separated IDs of v.
func (l *UIDs) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
		if err != nil {
			return fmt.Errorf("%q is not a user ID", f)
		}
		*l = append(*l, uint32(n))
	}
	return nil
}

// PortRange is a FIRST-LAST flag of TCP ports, 1 to 65535. The zero value
// is no range.
type PortRange [2]int

// String returns FIRST-LAST, or "" for no range.
func (r *PortRange) String() string {
	if r[0] == 0 {
		return ""
	}
	return fmt.Sprintf("%d-%d", r[0], r[1])
}

// Set parses FIRST-LAST.
func (r *PortRange) Set(v string) error {
	a, b, ok := strings.Cut(v, "-")
	first, err1 := strconv.Atoi(a)
	last, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || first <= 0 || last < first || last > 65535 {
		return fmt.Errorf("%q is not a port range FIRST-LAST", v)
	}
	*r = PortRange{first, last}
	return nil
}

// DeathLimit is an N/DURATION flag: at most Deaths within Window.
type DeathLimit struct {
	Deaths int
	Window time.Duration
}

// String returns N/DURATION.
func (d *DeathLimit) String() string {
	if d == nil {
		return ""
	}
	return fmt.Sprintf("%d/%s", d.Deaths, d.Window)
}

// Set parses N/DURATION, N at least 1 and DURATION positive.
func (d *DeathLimit) Set(v string) error {
	n, w, ok := strings.Cut(v, "/")
	deaths, err1 := strconv.Atoi(n)
	window, err2 := time.ParseDuration(w)
	if !ok || err1 != nil || err2 != nil || deaths < 1 || window <= 0 {
		return fmt.Errorf("%q is not N/DURATION with N at least 1 and a positive duration (e.g. 5/1m)", v)
	}
	d.Deaths, d.Window = deaths, window
	return nil
}

// PositiveDuration is a duration flag that must be above zero, stored in
// *D.
type PositiveDuration struct{ D *time.Duration }

// String returns the duration.
func (p PositiveDuration) String() string {
	if p.D == nil {
		return ""
	}
	return p.D.String()
}

// Set parses a duration above zero.
func (p PositiveDuration) Set(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("%q is not a positive duration", v)
	}
	*p.D = d
	return nil
}

// Size is a size in bytes above zero, stored in *N: a number with an
// optional suffix KiB, MiB, GiB or TiB ("1GiB", "512MiB", "1048576").
type Size struct{ N *int64 }

// sizeUnits are Size's suffixes, longest match first by their order.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// String returns the size in the largest unit that divides it.
func (s Size) String() string {
	if s.N == nil {
		return ""
	}
	for _, u := range sizeUnits {
		if *s.N != 0 && *s.N%u.mult == 0 {
			return strconv.FormatInt(*s.N/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(*s.N, 10)
}

// Set parses a size above zero.
func (s Size) Set(v string) error {
	num, mult := strings.TrimSpace(v), int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("%q is not a size above zero (bytes, or with KiB, MiB, GiB, TiB)", v)
	}
	*s.N = n * mult
	return nil
}
