// Package contractsrc carries the source of the contract packages, so that
// a runner binary can build plugins against itself with no checkout of
// this repository: `runner plugins contract` writes it out and `runner
// plugins build` builds a team's module beside it (package pluginbuild).
//
// The source is contract.txtar, an archive of the module's go.mod, go.sum
// and the non-test Go files of contract/, contract/serve/ and
// contract/golem/. It is generated from those files (go generate, or
// SOPLUG_UPDATE_CONTRACTSRC=1 go test ./internal/contractsrc) and the
// package's test fails while it differs from them. The archive lives here,
// and not in a package at the module root, so that the module's only
// public packages are the ones plugin authors and embedders import.
package contractsrc

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"path"
	"strings"
)

//go:generate env SOPLUG_UPDATE_CONTRACTSRC=1 go test -trimpath -run TestArchiveIsCurrent .

//go:embed contract.txtar
var archive []byte

// File is one file of the contract module: its slash-separated path in the
// module and its content.
type File struct {
	Path string
	Data []byte
}

// ErrArchive is a malformed archive: a build from a damaged checkout.
var ErrArchive = errors.New("contractsrc: malformed contract archive")

// Files returns the contract module's files as this runner was built with
// them, in the archive's order (sorted by path).
func Files() ([]File, error) { return Parse(archive) }

// Parse reads an archive in txtar form: each file is a line "-- PATH --"
// followed by its content. Text before the first marker is a comment.
// A path that is absolute, has a ".." element or repeats is an error.
func Parse(data []byte) ([]File, error) {
	var files []File
	seen := map[string]bool{}
	var cur *File
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line = data[:i+1]
		}
		data = data[len(line):]
		if name, ok := marker(line); ok {
			if name == "" || path.IsAbs(name) || path.Clean(name) != name || strings.HasPrefix(name, "../") || name == ".." {
				return nil, fmt.Errorf("%w: bad path %q", ErrArchive, name)
			}
			if seen[name] {
				return nil, fmt.Errorf("%w: %s twice", ErrArchive, name)
			}
			seen[name] = true
			files = append(files, File{Path: name})
			cur = &files[len(files)-1]
			continue
		}
		if cur != nil {
			cur.Data = append(cur.Data, line...)
		}
	}
	return files, nil
}

// Format writes files as an archive that Parse reads back unchanged. A
// file must end with a newline and hold no line that reads as a marker.
func Format(comment string, files []File) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(comment)
	for _, f := range files {
		if len(f.Data) > 0 && f.Data[len(f.Data)-1] != '\n' {
			return nil, fmt.Errorf("%w: %s does not end with a newline", ErrArchive, f.Path)
		}
		for _, l := range bytes.SplitAfter(f.Data, []byte("\n")) {
			if _, ok := marker(l); ok {
				return nil, fmt.Errorf("%w: %s has a line that reads as a file marker: %q", ErrArchive, f.Path, l)
			}
		}
		fmt.Fprintf(&b, "-- %s --\n", f.Path)
		b.Write(f.Data)
	}
	return b.Bytes(), nil
}

func marker(line []byte) (string, bool) {
	s := strings.TrimSuffix(string(line), "\n")
	if !strings.HasPrefix(s, "-- ") || !strings.HasSuffix(s, " --") || len(s) < 6 {
		return "", false
	}
	return strings.TrimSpace(s[3 : len(s)-3]), true
}
