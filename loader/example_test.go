package loader_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/loader"
	"github.com/soplug/soplug/loader/probe"
)

// An embedding host checks a folder without loading anything into its own
// process: every candidate is opened in a probe child, a re-execution of
// the host's own binary, which must dispatch to the probe first thing in
// main:
//
//	func main() {
//		if code, ok := probe.Dispatch(os.Args); ok {
//			os.Exit(code)
//		}
//		...
//	}
func Example() {
	sel, err := loader.New(loader.Config{Dir: "../plugins"}).Check(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range sel.Selected() {
		fmt.Println(c.Name, c.Version, c.Kind)
	}
	// Output:
	// golemmeta 1.0.0 transformer
	// kindcount 1.0.0 oplog-processor
	// wasmdigest 1.0.0 transformer
	// wasmtag 1.1.0 transformer
}

// Load selects as Check does, then opens each winner in this process, once,
// and hands out its contract interface. The selection holds the plugins
// until Close.
func ExampleLoader_Load() {
	if code, ok := probe.Dispatch(os.Args); ok {
		os.Exit(code)
	}
	sel, err := loader.New(loader.Config{Dir: "/opt/soplug/plugins"}).Load(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer sel.Close()
	for _, c := range sel.Selected() {
		if tr, ok := c.Plugin.(contract.Transformer); ok {
			fmt.Println(c.Name, "transforms, version", tr.Version())
		}
	}
}
