// Command server is xform.Checker as a hashicorp/go-plugin plugin process.
// It speaks gRPC, or net/rpc when CALLBENCH_PROTOCOL=netrpc: go-plugin's
// server picks gRPC whenever it can, whatever the client allows.
package main

import (
	"os"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/soplug/soplug/bench/callbench/xform"
)

func main() {
	cfg := &goplugin.ServeConfig{
		HandshakeConfig: xform.Handshake,
		Plugins:         goplugin.PluginSet{"transformer": &xform.Plugin{Impl: xform.Checker{}}},
		GRPCServer:      goplugin.DefaultGRPCServer,
	}
	if os.Getenv("CALLBENCH_PROTOCOL") == "netrpc" {
		cfg.GRPCServer = nil
	}
	goplugin.Serve(cfg)
}
