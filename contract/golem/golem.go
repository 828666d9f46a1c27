// Package golem is soplug's extension of the Transformer contract for
// requests that come from Golem's component service (its component
// transformer plugins): a Transformer reads the component's metadata, and
// adds files and environment entries to Golem's answer, through the
// context of its Transform call.
//
//	func (t *tagger) Transform(ctx context.Context, b []byte, cfg contract.Config) ([]byte, error) {
//		if req, ok := golem.FromContext(ctx); ok {
//			name := req.Metadata.ComponentName
//			req.SetEnv("TAGGED_BY", "tagger")
//			...
//		}
//		...
//	}
//
// It is versioned apart from package contract, which it does not change:
// a plugin that does not import it loads exactly as before, and one that
// does must be built against the runner's version of it (Version says
// which), like every package the two share. A request that does not come
// from Golem carries no Request: FromContext reports false.
package golem

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
)

// Version is the version of this extension. A change that a plugin built
// against an older version could not read gets a new package
// (contract/golem/v2), never a change here.
const Version = 1

// Metadata is what Golem sends about the component being transformed, in
// its "metadata" part. Both generations of Golem's caller are read: the
// current one sends ComponentID, ComponentName, Files and Env; older ones
// sent VersionedComponentID instead of ComponentID, and ComponentSize,
// CreatedAt, ComponentType and their own Metadata besides. Fields Golem
// adds later are ignored.
type Metadata struct {
	// ComponentID is the component's ID (from VersionedComponentID for an
	// older Golem).
	ComponentID string `json:"componentId"`
	// ComponentName is the component's name.
	ComponentName string `json:"componentName"`
	// Files are the component's initial files.
	Files []ComponentFile `json:"files"`
	// Env is the component's environment.
	Env map[string]string `json:"env"`

	// VersionedComponentID is sent by older Golem releases.
	VersionedComponentID *VersionedComponentID `json:"versionedComponentId,omitempty"`
	// ComponentSize, CreatedAt, ComponentType and ComponentMetadata are
	// sent by older Golem releases, as they are.
	ComponentSize     uint64          `json:"componentSize,omitempty"`
	CreatedAt         string          `json:"createdAt,omitempty"`
	ComponentType     string          `json:"componentType,omitempty"`
	ComponentMetadata json.RawMessage `json:"metadata,omitempty"`
}

// VersionedComponentID is a component's ID and version, as older Golem
// releases send them.
type VersionedComponentID struct {
	ComponentID string `json:"componentId"`
	Version     uint64 `json:"version"`
}

// ComponentFile is one of the component's initial files, as Golem
// describes it (its content is not sent).
type ComponentFile struct {
	Key         string `json:"key,omitempty"`
	ContentHash string `json:"contentHash,omitempty"`
	Path        string `json:"path"`
	Permissions string `json:"permissions"`
}

// ParseMetadata reads Golem's metadata JSON. Unknown fields are ignored;
// a component ID is taken from VersionedComponentID when only that is
// there.
func ParseMetadata(data []byte) (Metadata, error) {
	var m Metadata
	if err := json.Unmarshal(data, &m); err != nil {
		return Metadata{}, fmt.Errorf("golem: the metadata is not Golem's component JSON: %w", err)
	}
	if m.ComponentID == "" && m.VersionedComponentID != nil {
		m.ComponentID = m.VersionedComponentID.ComponentID
	}
	if m.Env == nil {
		m.Env = map[string]string{}
	}
	return m, nil
}

// File permissions Golem knows.
const (
	ReadOnly  = "read-only"
	ReadWrite = "read-write"
)

// File is a file a plugin adds to the component: Golem installs it in the
// component's file system.
type File struct {
	// Path is absolute, with '/' separators and no "." or ".." element.
	Path string `json:"path"`
	// Permissions is ReadOnly or ReadWrite.
	Permissions string `json:"permissions"`
	// Content is the file's bytes (base64 in Golem's JSON).
	Content []byte `json:"content"`
}

// Request is one Golem request as its Transformers see it: the metadata
// to read, and the files and environment entries they add to the answer.
// Every Transformer of a chain gets the same Request. It is safe for
// concurrent use.
type Request struct {
	// Metadata is what Golem sent about the component.
	Metadata Metadata

	mu    sync.Mutex
	files []File
	env   map[string]string
}

// NewRequest returns a Request for metadata, with nothing added yet.
func NewRequest(m Metadata) *Request { return &Request{Metadata: m, env: map[string]string{}} }

// AddFile adds a file to the answer, replacing one added before at the
// same path. An error says why the path or permissions are not Golem's.
func (r *Request) AddFile(f File) error {
	if !strings.HasPrefix(f.Path, "/") || path.Clean(f.Path) != f.Path || f.Path == "/" {
		return fmt.Errorf("golem: file path %q: want an absolute path without \".\", \"..\" or a trailing '/'", f.Path)
	}
	if f.Permissions != ReadOnly && f.Permissions != ReadWrite {
		return fmt.Errorf("golem: file %s: permissions %q: want %q or %q", f.Path, f.Permissions, ReadOnly, ReadWrite)
	}
	f.Content = slices.Clone(f.Content)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.files = slices.DeleteFunc(r.files, func(o File) bool { return o.Path == f.Path })
	r.files = append(r.files, f)
	return nil
}

// SetEnv sets an environment entry of the answer.
func (r *Request) SetEnv(key, value string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.env[key] = value
}

// Files returns the files added, in the order they were added.
func (r *Request) Files() []File {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.files)
}

// Env returns the environment entries set.
func (r *Request) Env() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.env)
}

type ctxKey struct{}

// NewContext returns ctx carrying r: the host calls it for each Golem
// request.
func NewContext(ctx context.Context, r *Request) context.Context {
	return context.WithValue(ctx, ctxKey{}, r)
}

// FromContext returns the Golem request of a Transform call, and false
// when the call does not come from Golem.
func FromContext(ctx context.Context) (*Request, bool) {
	r, ok := ctx.Value(ctxKey{}).(*Request)
	return r, ok && r != nil
}
