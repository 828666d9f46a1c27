package loader_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/soplug/soplug/loader"
)

// fastBad are bad fixtures that fail without a timeout: the selection
// benchmark measures the work of rejecting, not the probe's time limit.
var fastBad = []string{"notacceptable", "acceptpanic", "initpanic", "initexit", "noaccessor", "wrongtype",
	"nilaccessor", "othercontract", "badversion", "initsegv"}

// cacheableBad are the bad fixtures whose verdicts depend only on the
// file and the runner's build: a verdict cache holds them.
var cacheableBad = []string{"noaccessor", "wrongtype", "nilaccessor", "othercontract", "badversion", "variable", "bothkinds"}

// candidates fills a folder with n candidates of one plugin, all but the
// oldest bad: the kinds of bad in turn, and a truncated file every fifth.
func candidates(b *testing.B, n int, bad []string) string {
	dir := b.TempDir()
	install(b, dir, "good-1.0.0", "p_v1.0.0.so")
	for i := 1; i < n; i++ {
		file := fmt.Sprintf("p_v1.%d.0.so", i)
		if i%5 == 0 {
			write(b, dir, file, truncated(b))
		} else {
			install(b, dir, bad[i%len(bad)], file)
		}
	}
	return dir
}

// BenchmarkCheck selects among n candidates of one plugin where all but
// the oldest are bad, with no cache: every candidate is checked and
// probed.
func BenchmarkCheck(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("candidates=%d", n), func(b *testing.B) {
			l := loader.New(loader.Config{Dir: candidates(b, n, fastBad)})
			b.ResetTimer()
			for b.Loop() {
				sel, err := l.Check(context.Background())
				if err != nil || len(sel.Selected()) != 1 {
					b.Fatalf("selection failed: %v", err)
				}
			}
		})
	}
}

// BenchmarkProbe is the cost of one probe child on a good plugin: start,
// open, accessor, IsAcceptable, report.
func BenchmarkProbe(b *testing.B) {
	path := install(b, b.TempDir(), "good-1.0.0", "p_v1.0.0.so")
	for b.Loop() {
		if _, err := (loader.Prober{}).Probe(context.Background(), path); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProbeSpare is BenchmarkProbe with a spare child started (out
// of the timer) before each probe: what a probe costs the prepare stage
// when the daemon's spare is waiting.
func BenchmarkProbeSpare(b *testing.B) {
	path := install(b, b.TempDir(), "good-1.0.0", "p_v1.0.0.so")
	p := loader.Prober{Spare: &loader.Spare{}}
	defer p.Spare.Close()
	for b.Loop() {
		b.StopTimer()
		if err := p.Spare.Fill(p); err != nil {
			b.Fatal(err)
		}
		if !p.Spare.Ready() {
			b.Fatal("no spare")
		}
		time.Sleep(20 * time.Millisecond) // its start done
		b.StartTimer()
		if _, err := p.Probe(context.Background(), path); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckWarm selects among 50 candidates with a verdict cache
// that an earlier selection filled, opened from its file as a new process
// would: the check stage and the probe run only for what the cache does
// not hold. mix=fast is BenchmarkCheck's folder, whose bad kinds are
// mostly ones no cache may hold (IsAcceptable() false, panics and crashes
// in init or in the accessor, which depend on the host and the moment);
// mix=cacheable has only bad kinds that depend on the file alone.
func BenchmarkCheckWarm(b *testing.B) {
	for _, mix := range []struct {
		name string
		bad  []string
	}{{"fast", fastBad}, {"cacheable", cacheableBad}} {
		b.Run("mix="+mix.name, func(b *testing.B) {
			dir := candidates(b, 50, mix.bad)
			path := filepath.Join(b.TempDir(), "verdicts.json")
			cache := loader.OpenCache(path, "bench", nil)
			if _, err := loader.New(loader.Config{Dir: dir, Cache: cache}).Check(context.Background()); err != nil {
				b.Fatal(err)
			}
			if err := cache.Save(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				l := loader.New(loader.Config{Dir: dir, Cache: loader.OpenCache(path, "bench", nil)})
				sel, err := l.Check(context.Background())
				if err != nil || len(sel.Selected()) != 1 {
					b.Fatalf("selection failed: %v", err)
				}
			}
		})
	}
}
