// Package contract is the one thing set in stone between soplug releases: the
// interfaces a plugin implements and the names of the functions it exports.
//
// A plugin is a Go package main built with -buildmode=plugin. It exports one
// accessor function, a func with no arguments that returns the interface of
// its kind:
//
//	func Transformer() contract.Transformer        // TransformerAccessor
//	func OplogProcessor() contract.OplogProcessor  // OplogProcessorAccessor
//
// The accessor is a function, never an exported interface variable: a
// variable is looked up as a pointer to an interface, exists before the
// plugin has decided anything, and is refused by the loader. The accessor may
// be called more than once (once in the probe child, once in the daemon) and
// should return a ready value or nil when it cannot build one.
//
// A plugin file is named <name>_v<semver>.so and is built from its own
// package directory, plugin_sources/<name>/<version>/, because Go identifies
// a plugin by its package path: two versions built from one directory cannot
// be loaded side by side. The plugin and the runner must be built by the same
// Go toolchain, with the same flags and the same versions of every package
// they share, this package included; build_plugins.sh does that.
//
// This package imports only the standard library, so that a plugin shares no
// third-party package version with the runner through it.
package contract

import (
	"context"
	"time"
)

// ABIVersion is the version of this contract. It changes whenever an
// interface, type or accessor name in this package changes; Go refuses to load
// a plugin built against any other version of this package, and the loader
// reports that as the rejection reason.
const ABIVersion = 1

// Accessor symbol names: the exported function a plugin of each kind must
// define in its package main.
const (
	// TransformerAccessor is the name of the function a Transformer plugin
	// exports, of type func() Transformer.
	TransformerAccessor = "Transformer"
	// OplogProcessorAccessor is the name of the function an OplogProcessor
	// plugin exports, of type func() OplogProcessor.
	OplogProcessorAccessor = "OplogProcessor"
)

// Kind names a kind of plugin, as shown in the loader's candidate table.
type Kind string

// The plugin kinds this contract defines.
const (
	KindTransformer    Kind = "transformer"
	KindOplogProcessor Kind = "oplog-processor"
)

// Plugin is what every plugin is, whatever its kind.
type Plugin interface {
	// Version returns the plugin's semantic version. It must equal the
	// version in the plugin's file name; the loader rejects a plugin whose
	// file and Version disagree.
	Version() string
	// IsAcceptable reports whether this version can run on this host now,
	// e.g. whether the kernel, a feature flag or a file it needs is present.
	// It must return quickly and must not panic: the loader calls it in a
	// child process under a timeout first, and a false, a panic or a timeout
	// makes the loader fall back to the next older version.
	IsAcceptable() bool
}

// Config is a plugin installation's key/value configuration. Keys and values
// are opaque to soplug; a plugin documents the keys it reads.
type Config map[string]string

// Transformer transforms WebAssembly components (or core modules).
type Transformer interface {
	Plugin
	// Transform returns the transformed form of component under cfg.
	//
	// The component is passed and returned as bytes, not as a stream: a WASM
	// binary is a sequence of sections whose validation and rewriting need
	// the whole of it, the caller bounds its size before reading it, and a
	// transformer that appends sections can extend the same buffer without a
	// second copy. Transform may modify and return the input slice; the
	// caller does not use component after the call. An error means the
	// transformer refuses this input (an invalid or unsupported component);
	// ctx carries the request's deadline.
	Transform(ctx context.Context, component []byte, cfg Config) ([]byte, error)
}

// Entry is one record of a worker's oplog, the journal of the operations the
// worker performed.
type Entry struct {
	// WorkerID names the worker whose journal this is.
	WorkerID string
	// Index is the entry's position in the worker's journal, from 1, with no
	// gaps.
	Index uint64
	// Timestamp is when the worker recorded the operation.
	Timestamp time.Time
	// Kind is the operation's kind, e.g. "invoke" or "http-request".
	Kind string
	// Payload is the operation's data, opaque to soplug.
	Payload []byte
}

// Batch is a run of consecutive entries of one worker.
type Batch struct {
	// WorkerID names the worker all entries belong to.
	WorkerID string
	// FirstIndex is Entries[0].Index.
	FirstIndex uint64
	// Entries are in index order with no gaps.
	Entries []Entry
	// Redelivery is true when some of these entries may have been passed to
	// Process before, in a run that stopped before it recorded their
	// acknowledgement. An idempotent processor uses it to skip work it has
	// already done.
	Redelivery bool
}

// OplogProcessor observes workers through their oplogs. The host hands it
// every entry of each worker for which it is active, from index 1, including
// entries written before it became active, in index order, each exactly once
// except after an unclean stop, when a batch may be redelivered once with
// Batch.Redelivery set.
type OplogProcessor interface {
	Plugin
	// Init is called once before the first Process with the installation's
	// configuration.
	Init(ctx context.Context, cfg Config) error
	// Process handles one batch. A nil error acknowledges every entry in it;
	// an error makes the host retry the same batch later.
	Process(ctx context.Context, b Batch) error
	// Close releases what Init acquired. No Process call follows it.
	Close(ctx context.Context) error
}
