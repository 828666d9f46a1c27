package loader

import (
	"errors"
	"fmt"
	"strings"
)

// Rejection reasons. Every rejected candidate carries an error that wraps
// exactly one of these, so callers can test the reason with errors.Is.
var (
	// ErrBadName: the file name is not <name>_v<semver>.so.
	ErrBadName = errors.New("loader: name is not <name>_v<semver>.so")
	// ErrTempFile: a dotfile or a temporary or partial name (.tmp, .part, ~).
	ErrTempFile = errors.New("loader: temporary, partial or hidden file")
	// ErrNotRegular: a directory or another non-regular file.
	ErrNotRegular = errors.New("loader: not a regular file")
	// ErrSymlinkEscape: a symbolic link that leads out of the plugins folder.
	ErrSymlinkEscape = errors.New("loader: symlink leads out of the plugins folder")
	// ErrBrokenSymlink: a symbolic link that leads nowhere: to a file that
	// does not exist, or round a loop.
	ErrBrokenSymlink = errors.New("loader: symlink leads nowhere")
	// ErrDuplicateVersion: two files name the same plugin and version.
	ErrDuplicateVersion = errors.New("loader: duplicate version")
	// ErrNotAdmitted: Config.Admit refused the candidate; its error is
	// wrapped too.
	ErrNotAdmitted = errors.New("loader: not admitted")
	// ErrTooLarge: the file is over Config.MaxFileSize; nothing of it was
	// read.
	ErrTooLarge = errors.New("loader: plugin file over the size limit")
	// ErrEmpty: the file has no bytes.
	ErrEmpty = errors.New("loader: empty file")
	// ErrNotELF: the file is not an ELF object.
	ErrNotELF = errors.New("loader: not an ELF file")
	// ErrWrongArch: an ELF object for another machine or word size.
	ErrWrongArch = errors.New("loader: ELF for another architecture")
	// ErrTruncated: the ELF headers point past the end of the file, as in a
	// half-finished copy.
	ErrTruncated = errors.New("loader: truncated ELF file")
	// ErrNotPlugin: an ELF object that is not a Go plugin (an executable, a
	// C library, a Go binary of another build mode).
	ErrNotPlugin = errors.New("loader: not a Go plugin")
	// ErrNotExecutable: an out-of-process candidate that is not a Go
	// program for this machine.
	ErrNotExecutable = errors.New("loader: not a Go executable")
	// ErrHandshake: the plugin process did not complete go-plugin's
	// handshake: another protocol or contract ABI, or not a soplug plugin.
	ErrHandshake = errors.New("loader: plugin process handshake failed")
	// ErrProcessExited: the plugin process ended during its start or its
	// questions.
	ErrProcessExited = errors.New("loader: plugin process exited")
	// ErrBuildMismatch: the plugin links a package that the runner also
	// links, compiled differently (another module version, toolchain or
	// flags); plugin.Open would refuse it.
	ErrBuildMismatch = errors.New("loader: built differently from the runner")
	// ErrSameBuild: the build (plugin path) of a plugin already selected
	// under another name; Go loads a plugin path once per process.
	ErrSameBuild = errors.New("loader: the same build as another selected plugin")
	// ErrOpen: plugin.Open failed, e.g. the plugin was built with a
	// different version of a package it shares with the runner.
	ErrOpen = errors.New("loader: plugin.Open failed")
	// ErrNoAccessor: the plugin exports none of the contract's accessors.
	ErrNoAccessor = errors.New("loader: no accessor exported")
	// ErrAccessorType: the accessor symbol has the wrong type, or the plugin
	// exports accessors of more than one kind.
	ErrAccessorType = errors.New("loader: accessor has the wrong type")
	// ErrNilPlugin: the accessor returned nil.
	ErrNilPlugin = errors.New("loader: accessor returned nil")
	// ErrVersionMismatch: the plugin's Version() differs from its file name.
	ErrVersionMismatch = errors.New("loader: version differs from file name")
	// ErrNotAcceptable: IsAcceptable() returned false.
	ErrNotAcceptable = errors.New("loader: not acceptable on this host")
	// ErrPanic: the plugin panicked, in init, in its accessor or in
	// IsAcceptable.
	ErrPanic = errors.New("loader: plugin panicked")
	// ErrCrash: the probe child died, by a signal or an exit of its own,
	// before it reported a verdict.
	ErrCrash = errors.New("loader: probe child crashed")
	// ErrTimeout: the probe, or an in-process call, did not finish in time.
	ErrTimeout = errors.New("loader: timed out")
	// ErrProbe: the probe child could not be started or spoke out of turn.
	ErrProbe = errors.New("loader: probe failed")
	// ErrChanged: the file changed between its checks and its opening in
	// this process (a new version renamed over it, a rewrite).
	ErrChanged = errors.New("loader: file changed since it was checked")
	// ErrSwapped is fatal: the file this process mapped is not the file that
	// was checked, so unchecked code has run in this process and cannot be
	// unloaded. Load returns it at once; a daemon must exit, not serve.
	ErrSwapped = errors.New("loader: an unchecked file was loaded")
	// ErrAlreadyOpened: this process has already opened this file once;
	// Go's plugin package cannot open one path twice safely.
	ErrAlreadyOpened = errors.New("loader: file already opened in this process")

	// ErrNoAcceptable is returned, wrapped with the plugin's name, for every
	// plugin name that has no acceptable version.
	ErrNoAcceptable = errors.New("loader: no acceptable version")
	// ErrNoCandidates is returned when the folder holds no plugin file at
	// all.
	ErrNoCandidates = errors.New("loader: no plugin candidates")
)

// RejectError says why one candidate was rejected: the file, the stage that
// rejected it, and the reason, which wraps one of the Err* sentinels.
type RejectError struct {
	// Path is the candidate's file.
	Path string
	// Stage is the stage that rejected it.
	Stage Stage
	// Err is the reason.
	Err error
}

// Error returns "path: stage: reason".
func (e *RejectError) Error() string {
	return fmt.Sprintf("%s: %s: %v", e.Path, e.Stage, e.Err)
}

// Unwrap returns the reason.
func (e *RejectError) Unwrap() error { return e.Err }

// reject builds a RejectError whose reason is sentinel with detail appended.
func reject(path string, stage Stage, sentinel error, format string, args ...any) *RejectError {
	err := sentinel
	if format != "" {
		err = fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
	}
	return &RejectError{Path: path, Stage: stage, Err: err}
}

// Errors splits an error of Check or Load into its parts: one per plugin
// name with no acceptable version, or the error itself. Nil gives none.
func Errors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Plain returns a reason without this package's "loader: " prefix, for
// tables and logs that already say where it comes from.
func Plain(reason string) string { return strings.TrimPrefix(reason, "loader: ") }

// byteSize renders n bytes for a reason: "10.0 GiB", "512.0 MiB", "300 B".
func byteSize(n int64) string {
	const k = 1024
	switch {
	case n >= k*k*k:
		return fmt.Sprintf("%.1f GiB (%d bytes)", float64(n)/(k*k*k), n)
	case n >= k*k:
		return fmt.Sprintf("%.1f MiB (%d bytes)", float64(n)/(k*k), n)
	}
	return fmt.Sprintf("%d bytes", n)
}
