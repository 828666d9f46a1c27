package oplog

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// SyncMode is how a FileJournal makes an append durable before it
// answers. Every mode fsyncs or syncfs's before an append succeeds; they
// differ in what one sync is shared by.
type SyncMode int

const (
	// SyncAuto is SyncFileSystem on a local file system, and SyncFile on
	// a network or FUSE one, whose syncfs may not reach its server.
	SyncAuto SyncMode = iota
	// SyncFileSystem makes appends durable with syncfs(2) of the oplog
	// folder's file system, which covers every oplog at once: the appends
	// to any workers written while one runs share the next. It also
	// flushes whatever else on that file system is waiting, so an oplog
	// folder shared with heavy writers of other files is better served
	// by SyncFile.
	SyncFileSystem
	// SyncFile fsyncs a worker's oplog; the appends to that worker written
	// while one runs share the next.
	SyncFile
	// SyncEachAppend fsyncs once per append, while the appends to its
	// worker wait: no group commit. It is the benchmarks' baseline.
	SyncEachAppend
)

var syncModes = []string{"auto", "filesystem", "file", "each-append"}

// String returns the mode's name, as ParseSyncMode reads it.
func (m SyncMode) String() string {
	if m >= 0 && int(m) < len(syncModes) {
		return syncModes[m]
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}

// ParseSyncMode reads a mode's name: auto, filesystem, file or
// each-append.
func ParseSyncMode(s string) (SyncMode, error) {
	for i, n := range syncModes {
		if s == n {
			return SyncMode(i), nil
		}
	}
	return 0, fmt.Errorf("oplog: sync mode %q: not one of %s", s, strings.Join(syncModes, ", "))
}

// MarshalText implements encoding.TextMarshaler.
func (m SyncMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (ParseSyncMode).
func (m *SyncMode) UnmarshalText(b []byte) error {
	v, err := ParseSyncMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// remoteFS are the file systems whose syncfs SyncAuto does not trust.
var remoteFS = map[int64]bool{
	unix.NFS_SUPER_MAGIC: true, unix.FUSE_SUPER_MAGIC: true, unix.SMB_SUPER_MAGIC: true,
	unix.SMB2_SUPER_MAGIC: true, unix.CIFS_SUPER_MAGIC: true, unix.V9FS_MAGIC: true,
	unix.CEPH_SUPER_MAGIC: true, unix.AFS_SUPER_MAGIC: true, unix.AFS_FS_MAGIC: true,
	unix.CODA_SUPER_MAGIC: true, unix.OCFS2_SUPER_MAGIC: true,
}

// resolve returns the mode SyncAuto is for the file system of dir.
func (m SyncMode) resolve(dir string) SyncMode {
	if m != SyncAuto {
		return m
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || remoteFS[int64(st.Type)] {
		return SyncFile
	}
	return SyncFileSystem
}
