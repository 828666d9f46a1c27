package loader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"plugin"
	"strconv"
	"strings"
	"sync"
	"syscall"

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

// fileID is what identifies a file's content: device, inode, size,
// modification and change times. The change time cannot be set by a user,
// so a rewrite in place changes it.
type fileID struct {
	dev, ino, size uint64
	mtime, ctime   syscall.Timespec
}

func statID(path string) (fileID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fileID{}, err
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: uint64(st.Size), mtime: st.Mtim, ctime: st.Ctim}, nil
}

// testHookBeforeOpen, when set by a test, runs between the last identity
// check and plugin.Open: the window a swap could use.
var testHookBeforeOpen func(path string)

// loadInProcess opens the plugin at path in this process, once, and asks
// it again what the probe child asked it. want is the identity the file had
// when its checks began: a different file is not opened, and a file mapped
// that is not it is ErrSwapped.
func loadInProcess(ctx context.Context, path string, want fileID) (probe.Report, error) {
	if got, err := statID(path); err != nil || got != want {
		return probe.Report{}, reject(path, StageLoad, ErrChanged, "it is not the file that passed the checks (renamed over or rewritten); the next start checks it afresh")
	}
	open := func(path string) (*plugin.Plugin, error) {
		if testHookBeforeOpen != nil {
			testHookBeforeOpen(path)
		}
		p, err := openOnce(path)
		if err == nil {
			if verr := verifyMapped(path, want); verr != nil {
				return nil, verr
			}
		}
		return p, err
	}
	rep, err := probe.Inspect(ctx, path, open, func(probe.Step) {})
	if perr := (*probe.Error)(nil); errors.As(err, &perr) && errors.Is(perr.Err, ErrSwapped) {
		return rep, &RejectError{Path: path, Stage: StageLoad, Err: perr.Err}
	}
	if err != nil {
		return rep, &RejectError{Path: path, Stage: StageLoad, Err: codeError(err.(*probe.Error))}
	}
	return rep, nil
}

// verifyMapped checks that the file this process mapped for path is the one
// identified by want, from /proc/self/maps.
func verifyMapped(path string, want fileID) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSwapped, err)
	}
	real, _ = filepath.Abs(real)
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil // no procfs: nothing to compare with
	}
	major := (want.dev>>8)&0xfff | (want.dev>>32)&^0xfff
	minor := want.dev&0xff | (want.dev>>12)&^0xff
	wantDev := fmt.Sprintf("%02x:%02x", major, minor)
	found := false
	for line := range strings.Lines(string(maps)) {
		f := strings.Fields(line)
		if len(f) < 6 || strings.Join(f[5:], " ") != real {
			continue
		}
		found = true
		if ino, _ := strconv.ParseUint(f[4], 10, 64); ino != want.ino || f[3] != wantDev {
			return fmt.Errorf("%w: %s is mapped from inode %s on %s, the checked file was inode %d on %s",
				ErrSwapped, real, f[4], f[3], want.ino, wantDev)
		}
	}
	if !found {
		return fmt.Errorf("%w: %s is not in /proc/self/maps after plugin.Open", ErrSwapped, real)
	}
	return nil
}
