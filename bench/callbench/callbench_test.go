// Package callbench measures the cost of one Transform call through a
// native plugin, linked statically, through soplug's out-of-process backend
// (contract/serve, loaded by the loader), and through hashicorp/go-plugin
// over net/rpc and gRPC, side by side in one process. bench/run builds
// bin/plugin.so, bin/procplugin and bin/server first.
package callbench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"plugin"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/soplug/soplug/bench/callbench/xform"
	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/loader"
)

var sizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}}

// static is held in a variable of the interface type, so that the call is
// dispatched as a plugin's is, not inlined.
var static contract.Transformer = xform.Checker{}

func native(b *testing.B) contract.Transformer {
	p, err := plugin.Open(filepath.Join("bin", "plugin.so"))
	if err != nil {
		b.Fatalf("bin/plugin.so: %v (bench/run builds it with this module's toolchain and dependencies)", err)
	}
	sym, err := p.Lookup(contract.TransformerAccessor)
	if err != nil {
		b.Fatal(err)
	}
	return sym.(func() contract.Transformer)()
}

func remote(b *testing.B, proto goplugin.Protocol) contract.Transformer {
	server := filepath.Join("bin", "server")
	if _, err := os.Stat(server); err != nil {
		b.Fatalf("bin/server: %v (bench/run builds it)", err)
	}
	cmd := exec.Command(server)
	cmd.Env = append(os.Environ(), "CALLBENCH_PROTOCOL="+string(proto))
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  xform.Handshake,
		Plugins:          goplugin.PluginSet{"transformer": &xform.Plugin{}},
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{proto},
		Logger:           hclog.New(&hclog.LoggerOptions{Output: io.Discard}),
	})
	b.Cleanup(client.Kill)
	rpc, err := client.Client()
	if err != nil {
		b.Fatal(err)
	}
	raw, err := rpc.Dispense("transformer")
	if err != nil {
		b.Fatal(err)
	}
	return raw.(contract.Transformer)
}

// process loads bin/procplugin with the loader, as the runner loads an
// out-of-process plugin.
func process(b *testing.B) contract.Transformer {
	data, err := os.ReadFile(filepath.Join("bin", "procplugin"))
	if err != nil {
		b.Fatalf("bin/procplugin: %v (bench/run builds it)", err)
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "checker_v1.0.0"), data, 0o755); err != nil {
		b.Fatal(err)
	}
	sel, err := loader.New(loader.Config{Dir: dir}).Load(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sel.Close)
	return sel.Selected()[0].Plugin.(contract.Transformer)
}

var native1 contract.Transformer

// BenchmarkTransform calls Transform on a valid component of each size.
func BenchmarkTransform(b *testing.B) {
	backends := []struct {
		name string
		get  func(*testing.B) contract.Transformer
	}{
		{"static", func(*testing.B) contract.Transformer { return static }},
		{"so", func(b *testing.B) contract.Transformer {
			if native1 == nil {
				native1 = native(b) // a plugin can be opened once per process
			}
			return native1
		}},
		{"process", process},
		{"goplugin-netrpc", func(b *testing.B) contract.Transformer { return remote(b, goplugin.ProtocolNetRPC) }},
		{"goplugin-grpc", func(b *testing.B) contract.Transformer { return remote(b, goplugin.ProtocolGRPC) }},
	}
	ctx := context.Background()
	for _, size := range sizes {
		in := xform.Component(size.n)
		for _, be := range backends {
			b.Run(fmt.Sprintf("size=%s/backend=%s", size.name, be.name), func(b *testing.B) {
				t := be.get(b)
				// Warm up untimed: each round of -count starts right after the
				// go-plugin runs, whose cache and frequency effects would
				// otherwise land on the first nanosecond-scale rows.
				for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); {
					_, _ = t.Transform(ctx, in, nil)
				}
				b.SetBytes(int64(size.n))
				for b.Loop() {
					out, err := t.Transform(ctx, in, nil)
					if err != nil || len(out) != len(in) {
						b.Fatalf("transform: %v", err)
					}
				}
			})
		}
	}
}
