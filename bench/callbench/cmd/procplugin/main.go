// Command procplugin is xform.Checker as a soplug out-of-process plugin,
// served by contract/serve: what the runner's process backend calls.
package main

import (
	"github.com/soplug/soplug/bench/callbench/xform"
	"github.com/soplug/soplug/contract/serve"
)

func main() { serve.Transformer(xform.Checker{}) }
