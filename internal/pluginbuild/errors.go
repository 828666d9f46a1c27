// Package pluginbuild builds a plugin module that lives anywhere into a file
// a given runner loads, from that runner binary alone.
//
// A Go plugin loads only into a process whose shared packages were compiled
// exactly as the plugin's: the same Go release, flags and module versions,
// and (without -trimpath) the same folder. A runner binary records all of it
// in its build info, and carries the source of the contract packages
// (package contractsrc). Build reads both from the runner, pins the
// plugin's shared modules to the runner's versions in a Go workspace of its
// own (the team's go.mod is never touched), builds with the runner's
// toolchain and flags, and has the runner itself check and probe the result
// exactly as `runner plugins install` does.
//
// New writes a ready plugin module to start from; WriteContract writes the
// contract module, for an editor or a test run outside Build.
package pluginbuild

import "errors"

// Errors, wrapped with the detail; test with errors.Is.
var (
	// ErrRunner: the runner binary cannot be built against (not a Go
	// binary, built without -trimpath or cgo, or from sources no other
	// build can reproduce).
	ErrRunner = errors.New("pluginbuild: the runner cannot be built against")
	// ErrModule: the plugin module is not one Build can build (no go.mod,
	// an unusable name, a Go version newer than the runner's).
	ErrModule = errors.New("pluginbuild: the plugin module")
	// ErrNewerModule: the plugin needs a newer version of a module the
	// runner links than the runner has.
	ErrNewerModule = errors.New("pluginbuild: the plugin needs a newer module than the runner links")
	// ErrGo: a go command failed (the module does not build, a test
	// failed, the toolchain could not be fetched).
	ErrGo = errors.New("pluginbuild: go")
	// ErrRejected: the runner's own checks refused the built file.
	ErrRejected = errors.New("pluginbuild: the runner refused the built plugin")
	// ErrExists: New would overwrite files.
	ErrExists = errors.New("pluginbuild: the folder is not empty")
)
