package contract_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/soplug/soplug/contract"
)

// stamp is a plugin author's Transformer: it appends the value of the
// "stamp" config key to the component.
type stamp struct{}

func (stamp) Version() string    { return "1.0.0" }
func (stamp) IsAcceptable() bool { return true }
func (stamp) Transform(_ context.Context, component []byte, cfg contract.Config) ([]byte, error) {
	if !bytes.HasPrefix(component, []byte("\x00asm")) {
		return nil, fmt.Errorf("not a WebAssembly binary")
	}
	return append(component, cfg["stamp"]...), nil
}

// Transformer is the accessor. In a plugin it is an exported function of
// package main named contract.TransformerAccessor; the file is built with
//
//	go build -trimpath -buildmode=plugin -o plugins/stamp_v1.0.0.so ./plugin_sources/stamp/1.0.0
func Transformer() contract.Transformer { return stamp{} }

// A plugin exports an accessor function; the host looks it up by name,
// checks its type, calls it, and asks the plugin whether it can run here.
func Example() {
	var accessor any = Transformer // what plugin.Lookup(contract.TransformerAccessor) returns
	get, ok := accessor.(func() contract.Transformer)
	fmt.Println("accessor has the contract's type:", ok)

	t := get()
	fmt.Println("version:", t.Version(), "acceptable:", t.IsAcceptable())
	out, err := t.Transform(context.Background(), []byte("\x00asm\x01\x00\x00\x00"), contract.Config{"stamp": "!"})
	fmt.Printf("%q %v\n", out, err)
	// Output:
	// accessor has the contract's type: true
	// version: 1.0.0 acceptable: true
	// "\x00asm\x01\x00\x00\x00!" <nil>
}

// tally is an OplogProcessor that counts entries and skips the ones a
// redelivered batch repeats.
type tally struct {
	last  map[string]uint64
	count int
}

func (*tally) Version() string    { return "1.0.0" }
func (*tally) IsAcceptable() bool { return true }
func (t *tally) Init(context.Context, contract.Config) error {
	t.last = map[string]uint64{}
	return nil
}
func (t *tally) Process(_ context.Context, b contract.Batch) error {
	for _, e := range b.Entries {
		if e.Index <= t.last[b.WorkerID] {
			continue // seen before the restart that caused the redelivery
		}
		t.last[b.WorkerID] = e.Index
		t.count++
	}
	return nil
}
func (*tally) Close(context.Context) error { return nil }

// OplogProcessor is the accessor of an OplogProcessor plugin.
func OplogProcessor() contract.OplogProcessor { return &tally{} }

// An OplogProcessor sees each worker's entries in index order; after an
// unclean stop a batch can come again, marked as a redelivery.
func Example_oplogProcessor() {
	p := OplogProcessor()
	ctx := context.Background()
	_ = p.Init(ctx, contract.Config{})
	entries := []contract.Entry{{WorkerID: "w1", Index: 1, Kind: "invoke"}, {WorkerID: "w1", Index: 2, Kind: "invoke"}}
	_ = p.Process(ctx, contract.Batch{WorkerID: "w1", FirstIndex: 1, Entries: entries})
	_ = p.Process(ctx, contract.Batch{WorkerID: "w1", FirstIndex: 1, Entries: entries, Redelivery: true})
	_ = p.Close(ctx)
	fmt.Println("entries counted:", p.(*tally).count)
	// Output:
	// entries counted: 2
}
