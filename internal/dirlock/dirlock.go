// Package dirlock makes one live process the owner of a folder: an
// exclusive flock(2) on a lock file in it, which the kernel releases when
// the process dies however it dies, and the owner's PID written there for
// the message a second process prints.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Name is the lock file's name in the folder it guards.
const Name = ".runner.lock"

// ErrHeld is a folder another live process owns.
var ErrHeld = errors.New("dirlock: the folder is owned by another live process")

// HeldError is ErrHeld with the folder and the owner's PID (0 when it has
// not written it yet).
type HeldError struct {
	Dir string
	PID int
}

func (e *HeldError) Error() string {
	owner := "a process that has not written its PID yet"
	if e.PID > 0 {
		owner = "PID " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("%v: %s is in use by %s; one runner at a time may use it (stop that one, or give this one its own folder)", ErrHeld, e.Dir, owner)
}

// Unwrap returns ErrHeld.
func (e *HeldError) Unwrap() error { return ErrHeld }

// Lock is an owned folder. Release it, or let the process end.
type Lock struct {
	f *os.File
}

// Acquire makes this process the owner of dir, creating dir when it does
// not exist. When another live process owns it, the error is a *HeldError
// and nothing in dir is changed; when dir cannot be used at all, the error
// is ErrUnusable with the errno.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, unusable(dir, "creating it", err)
	}
	path := filepath.Join(dir, Name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, unusable(dir, "opening its lock file", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &HeldError{Dir: dir, PID: readPID(f)}
		}
		return nil, unusable(dir, "locking "+path, err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt(pid, 0)
	}
	if err != nil {
		f.Close()
		return nil, unusable(dir, "writing "+path, err)
	}
	return &Lock{f: f}, nil
}

// ErrUnusable is a folder this process cannot own: it cannot be created,
// or its lock file cannot be created, locked or written (a read-only file
// system, a missing permission, a file in its place).
var ErrUnusable = errors.New("dirlock: the folder cannot be used")

// unusable wraps err, naming dir, the step and the errno (EROFS, EACCES):
// the operator's answer is in the errno, not in a guess.
func unusable(dir, step string, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Errorf("%w: %s: %s: %w (%s)", ErrUnusable, dir, step, err, unix.ErrnoName(errno))
	}
	return fmt.Errorf("%w: %s: %s: %w", ErrUnusable, dir, step, err)
}

func readPID(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	return pid
}

// Release gives the folder up. The lock file stays: removing it would let
// a third process lock a new file while a second still holds the old.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
