// Package inflight bounds the memory that request bodies hold across the
// whole daemon: every service charges the bytes it keeps of a body against
// one Budget, as they arrive, and refuses a request the Budget cannot hold
// (503 with Retry-After) instead of growing without limit.
package inflight

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrExhausted is a charge the Budget cannot hold: the request is refused
// and may be retried later.
var ErrExhausted = errors.New("inflight: the daemon's budget for request bodies in flight is exhausted")

// Budget is a count of bytes in flight with a limit. The nil *Budget and a
// Budget of limit 0 hold anything. It is safe for concurrent use.
type Budget struct {
	limit int64
	used  atomic.Int64
	// refused counts charges refused, for metrics.
	refused atomic.Int64
}

// New returns a Budget of limit bytes; limit <= 0 means no limit.
func New(limit int64) *Budget { return &Budget{limit: max(limit, 0)} }

// Limit returns the limit in bytes (0: none).
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// InUse returns the bytes charged and not yet released.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Refused returns how many charges were refused.
func (b *Budget) Refused() int64 {
	if b == nil {
		return 0
	}
	return b.refused.Load()
}

// TryAcquire charges n bytes, or reports false, charging nothing, when that
// would pass the limit.
func (b *Budget) TryAcquire(n int64) bool {
	if b == nil || n <= 0 {
		return true
	}
	for {
		used := b.used.Load()
		if b.limit > 0 && used+n > b.limit {
			b.refused.Add(1)
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// Admit reports, without charging anything, whether n more bytes fit now:
// ErrExhausted (counted as refused) when they do not. A service calls it
// with what a request announces (its Content-Length) before reading, and
// charges the bytes as they arrive: a client that announces a large body
// and sends nothing holds no part of the budget.
func (b *Budget) Admit(n int64) error {
	if b == nil || b.limit == 0 || n <= 0 {
		return nil
	}
	if used := b.used.Load(); used+n > b.limit {
		b.refused.Add(1)
		return fmt.Errorf("%w (%d of %d bytes in use; this request announces %d)", ErrExhausted, used, b.limit, n)
	}
	return nil
}

// Release gives back n bytes charged by TryAcquire.
func (b *Budget) Release(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.used.Add(-n)
}

// Charge is the part of a Budget one request holds. Grow charges more as
// the request's buffers grow; Release gives it all back. The zero Charge
// of a nil Budget holds anything.
type Charge struct {
	b *Budget
	n int64
}

// Charge returns an empty Charge against b.
func (b *Budget) Charge() *Charge { return &Charge{b: b} }

// Grow makes the charge at least n bytes; ErrExhausted when the Budget
// cannot hold the difference (the charge is then unchanged).
func (c *Charge) Grow(n int64) error {
	if n <= c.n {
		return nil
	}
	if !c.b.TryAcquire(n - c.n) {
		return fmt.Errorf("%w (%d of %d bytes in use; this request needs %d more)", ErrExhausted, c.b.InUse(), c.b.Limit(), n-c.n)
	}
	c.n = n
	return nil
}

// Held returns the bytes charged.
func (c *Charge) Held() int64 { return c.n }

// Release gives back everything charged; the Charge may grow again.
func (c *Charge) Release() {
	c.b.Release(c.n)
	c.n = 0
}

// Reader charges weight bytes for every byte read from r against c
// before returning it: a read the Budget cannot hold fails with
// ErrExhausted. Weight is the memory a byte of the body costs the service
// that decodes it (1 for a body kept as it is).
func Reader(r io.Reader, c *Charge, weight int64) io.Reader {
	return &reader{r: r, c: c, w: max(weight, 1)}
}

type reader struct {
	r    io.Reader
	c    *Charge
	w    int64
	read int64
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.read += int64(n)
	if gerr := r.c.Grow(r.read * r.w); gerr != nil {
		return 0, gerr
	}
	return n, err
}

// DefaultLimit is the budget for a machine with memTotal bytes of memory:
// an eighth of it, between 256 MiB and 2 GiB, and never less than the
// largest body one request may send (maxBody), so that one such request
// always fits.
func DefaultLimit(memTotal, maxBody int64) int64 {
	l := min(max(memTotal/8, 256<<20), 2<<30)
	return max(l, maxBody)
}

// MemTotal returns the memory this process may use: the smaller of its
// cgroup's memory.max (when one is set) and MemTotal in /proc/meminfo; 0
// when neither can be read.
func MemTotal() int64 {
	total := meminfo()
	if lim := cgroupMax(); lim > 0 && (total == 0 || lim < total) {
		total = lim
	}
	return total
}

func meminfo() int64 { return kibField("/proc/meminfo", "MemTotal:") }

// kibField returns, in bytes, the field of a /proc file that gives a size
// in kB ("MemTotal:", "VmRSS:"); 0 when it cannot be read.
func kibField(path, field string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return kb << 10
				}
			}
		}
	}
	return 0
}

// cgroupMax reads memory.max of this process's cgroup (v2); 0 for none.
func cgroupMax() int64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			v, err := os.ReadFile("/sys/fs/cgroup" + rest + "/memory.max")
			if err != nil {
				return 0
			}
			n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
			if err != nil { // "max"
				return 0
			}
			return n
		}
	}
	return 0
}

// Register exports the budget's state to reg: soplug_inflight_body_bytes
// (in use), soplug_inflight_body_limit_bytes, and
// soplug_inflight_refused_total (requests refused with 503).
func (b *Budget) Register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "soplug_inflight_body_bytes",
			Help: "Bytes of request bodies held in flight, charged against the budget."}, func() float64 { return float64(b.InUse()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "soplug_inflight_body_limit_bytes",
			Help: "The budget of request bodies in flight (--max-inflight-bytes; 0: none)."}, func() float64 { return float64(b.Limit()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "soplug_inflight_refused_total",
			Help: "Requests refused with 503 because the budget could not hold their body."}, func() float64 { return float64(b.Refused()) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// MemoryHeadroom is what a daemon holds besides its budget's charges: its
// code and runtime, and garbage that is not yet collected.
const MemoryHeadroom = 64 << 20

// SetMemoryLimit sets the Go runtime's soft memory limit so that the
// process's resident memory stays within b's limit plus MemoryHeadroom:
// that, less what the process holds outside the Go runtime now (its code,
// mapped as it runs) and a quarter of the headroom for the runtime to
// overshoot its soft limit by, and at least b's limit plus half the
// headroom. The
// runtime then collects what finished requests leave behind before the
// process grows past it. It returns the limit set, or 0, doing nothing,
// when b has no limit or GOMEMLIMIT is set (the operator's limit stands).
func SetMemoryLimit(b *Budget) int64 {
	if b.Limit() == 0 || os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	outside := max(residentBytes()-int64(ms.Sys-ms.HeapReleased), 0)
	limit := max(b.Limit()+MemoryHeadroom-outside-MemoryHeadroom/4, b.Limit()+MemoryHeadroom/2)
	debug.SetMemoryLimit(limit)
	return limit
}

// residentBytes returns this process's resident memory (VmRSS), 0 when
// it cannot be read.
func residentBytes() int64 { return kibField("/proc/self/status", "VmRSS:") }
