package main

import (
	"errors"

	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/loader"
)

// exitFor maps a selection error to an exit status.
func exitFor(err error) int {
	switch {
	case err == nil:
		return exitcode.OK
	case errors.Is(err, loader.ErrNoAcceptable), errors.Is(err, loader.ErrNoCandidates):
		return exitcode.NoPlugin
	}
	return exitcode.NoInput
}
