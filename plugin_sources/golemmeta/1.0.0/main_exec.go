//go:build soplug_exec

package main

import "github.com/soplug/soplug/contract/serve"

// main serves the plugin out of process: go build -tags soplug_exec.
func main() { serve.Transformer(Transformer()) }
