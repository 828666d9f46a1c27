// Command plugin is xform.Checker as a native plugin.
package main

import (
	"github.com/soplug/soplug/bench/callbench/xform"
	"github.com/soplug/soplug/contract"
)

// Transformer is the accessor.
func Transformer() contract.Transformer { return xform.Checker{} }

func main() {}
