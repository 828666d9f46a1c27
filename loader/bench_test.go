package loader_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/soplug/soplug/loader"
)

// fastBad are bad fixtures that fail without a timeout: the selection
// benchmark measures the work of rejecting, not the probe's time limit.
var fastBad = []string{"notacceptable", "acceptpanic", "initpanic", "initexit", "noaccessor", "wrongtype",
	"nilaccessor", "othercontract", "badversion", "initsegv"}

// BenchmarkCheck selects among n candidates of one plugin where all but
// the oldest are bad (the fast bad kinds in turn, and a truncated file
// every fifth), with no cache: every candidate is checked and probed.
func BenchmarkCheck(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("candidates=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			install(b, dir, "good-1.0.0", "p_v1.0.0.so")
			for i := 1; i < n; i++ {
				file := fmt.Sprintf("p_v1.%d.0.so", i)
				if i%5 == 0 {
					write(b, dir, file, truncated(b))
				} else {
					install(b, dir, fastBad[i%len(fastBad)], file)
				}
			}
			l := loader.New(loader.Config{Dir: dir})
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
