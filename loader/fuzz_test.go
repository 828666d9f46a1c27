package loader

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/soplug/soplug/internal/fixtures"
)

// FuzzParseFileName: any name either fails with ErrBadName or gives a name
// and version that format back into a name that parses to the same.
func FuzzParseFileName(f *testing.F) {
	for _, s := range []string{"wasmtag_v1.2.0.so", "a_1.so", "my_plugin_v1.0.0-rc.1+b.2.so", "x_v3_v1.0.0.so",
		"_v1.0.0.so", ".so", "x_v.so", "x_v1..0.so", "ü_v1.0.0.so", "x_v99999999999999999999.0.0.so"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, file string) {
		name, v, err := ParseFileName(file)
		if err != nil {
			if !errors.Is(err, ErrBadName) {
				t.Fatalf("%q: error %v does not wrap ErrBadName", file, err)
			}
			return
		}
		again := name + "_v" + v.String() + Suffix
		name2, v2, err := ParseFileName(again)
		if err != nil || name2 != name || !v2.Equal(v) {
			t.Fatalf("%q parsed as %q %s, but %q parses as %q %v (%v)", file, name, v, again, name2, v2, err)
		}
	})
}

// checkSentinels are the reasons checkELF may give.
var checkSentinels = []error{ErrEmpty, ErrNotELF, ErrTruncated, ErrWrongArch, ErrNotPlugin}

// FuzzCheckELF feeds mutated plugin bytes to the ELF check: it never
// panics, and it either accepts or names one of its reasons.
func FuzzCheckELF(f *testing.F) {
	for _, name := range []string{"clib", "good-1.0.0"} {
		data, err := os.ReadFile(fixtures.Path(f, name))
		if err != nil {
			f.Fatalf("run ./build_plugins.sh first: %v", err)
		}
		f.Add(data[:min(len(data), 64<<10)]) // headers and the first sections
		f.Add(data[:64])                     // the ELF header alone
	}
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rerr := checkELF(bytes.NewReader(data), int64(len(data)))
		if rerr == nil {
			return
		}
		for _, s := range checkSentinels {
			if errors.Is(rerr, s) {
				return
			}
		}
		t.Fatalf("reason %v wraps none of the check's sentinels", rerr)
	})
}
