// Package soplug carries the source of the contract packages, so that a
// runner binary can build plugins against itself with no checkout of this
// repository: `runner plugins contract` writes it out and `runner plugins
// build` builds a team's module beside it (package pluginbuild).
package soplug

import "embed"

// ContractSource holds go.mod, go.sum and the Go files of contract/,
// contract/serve/ and contract/golem/, test files included (writers skip
// them), as this runner was built from them.
//
//go:embed go.mod go.sum contract/*.go contract/serve/*.go contract/golem/*.go
var ContractSource embed.FS
