package loader

import (
	"context"
	"fmt"
	"path/filepath"
	"plugin"
	"sync"

	"github.com/soplug/soplug/loader/probe"
)

// opened records every real path this process has passed to plugin.Open.
// It is process-wide because the table it guards is: Go's plugin package
// keeps one per process, and an Open of a path whose earlier Open failed
// can hang for ever, so no two loaders may try one path twice.
var opened = struct {
	sync.Mutex
	paths map[string]bool
}{paths: map[string]bool{}}

// openOnce opens path with plugin.Open unless this process has already
// opened (or tried to open) the file it resolves to.
func openOnce(path string) (*plugin.Plugin, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, err
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return nil, err
	}
	opened.Lock()
	seen := opened.paths[real]
	opened.paths[real] = true
	opened.Unlock()
	if seen {
		return nil, fmt.Errorf("%w: %s", ErrAlreadyOpened, real)
	}
	return plugin.Open(real)
}

// loadInProcess opens the plugin at path in this process, once, and asks
// it again what the probe child asked it.
func loadInProcess(ctx context.Context, path string) (probe.Report, error) {
	rep, err := probe.Inspect(ctx, path, openOnce, func(probe.Step) {})
	if err != nil {
		return rep, &RejectError{Path: path, Stage: StageLoad, Err: codeError(err.(*probe.Error))}
	}
	return rep, nil
}
