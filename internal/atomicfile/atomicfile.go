// Package atomicfile replaces small files so that a reader sees the old
// content or the new, never a mix: durably (Write, WriteFor: a crash of the
// machine leaves one of the two, and a new file survives it), or only for
// readers (Replace, for a cache).
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with data: it writes path.tmp with perm, syncs it,
// renames it over path and syncs the folder.
func Write(path string, data []byte, perm os.FileMode) error {
	return replace(path, data, perm, true)
}

// Replace replaces path with data as Write does, without syncing the file
// or the folder: a reader sees the old content or the new, and a crash of
// the process keeps what was written, but a crash of the machine may leave
// the old file, the new, or an empty or partly written one. It is for a
// cache, which a reader checks and whose loss costs only the work of
// filling it again; it saves Write's two syncs.
func Replace(path string, data []byte, perm os.FileMode) error {
	return replace(path, data, perm, false)
}

// replace writes path.tmp with perm and commits it over path, durably or
// not.
func replace(path string, data []byte, perm os.FileMode, durable bool) error {
	f, err := os.OpenFile(path+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	return commit(f, path, data, durable)
}

// WriteFor is Write for a folder that a less privileged user owns and can
// write to, as a state directory is to a root process: nothing planted in
// it is followed or reused. The temporary file gets a fresh random name
// and is created exclusively (O_EXCL, so a symlink of that name fails the
// create instead of being followed); it is given owner uid and group gid
// on the open descriptor (uid < 0: left as created), and perm, before it
// is renamed over path, which replaces a symlink at path rather than
// writing through it.
func WriteFor(path string, data []byte, perm os.FileMode, uid, gid int) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	var cherr error
	if uid >= 0 {
		cherr = f.Chown(uid, gid)
	}
	return commit(f, path, data, true, cherr, f.Chmod(perm))
}

// commit writes data to the temporary file f, syncs it when durable,
// closes it, renames it over path and, when durable, syncs the folder. An
// error of that, or one in prep (of what was done to f before), removes f
// instead.
func commit(f *os.File, path string, data []byte, durable bool, prep ...error) error {
	tmp := f.Name()
	_, werr := f.Write(data)
	var serr error
	if durable {
		serr = f.Sync()
	}
	cerr := f.Close()
	if err := errors.Join(append(prep, werr, serr, cerr)...); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if !durable {
		return nil
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir flushes dir's entries to disk, so that a file created, renamed or
// removed in it stays so after a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
