package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/soplug/soplug/loader"
)

// Remove is the removal of one installed version: the rollback.
type Remove struct {
	// Loader selects what the daemon would serve; its Dir is the plugins
	// folder.
	Loader loader.Config
	// Force removes the last acceptable version of its plugin too.
	Force bool
}

// Removed is what Remove did.
type Removed struct {
	// Files are the removed files (one, unless the version was installed
	// under two names).
	Files []string `json:"files"`
	// Signatures are the removed signatures of those files (FILE.sig).
	Signatures []string `json:"signatures,omitempty"`
	// Active is the version the daemon served before, Next the one it will
	// serve after ("" for none).
	Active string `json:"active"`
	Next   string `json:"next"`
	// NextFile is Next's file.
	NextFile string `json:"next_file,omitempty"`
}

// Run removes version ver of plugin name.
func (rm Remove) Run(ctx context.Context, name, ver string) (Removed, error) {
	var out Removed
	dir := rm.Loader.Dir
	if dir == "" {
		dir = loader.DefaultDir
	}
	files, err := Files(dir, name, ver)
	if err != nil {
		return out, err
	}
	if len(files) == 0 {
		return out, fmt.Errorf("%w: %s %s is not in %s", ErrNotFound, name, ver, dir)
	}
	out.Files = files

	// What is served now, and what would be without these files.
	if out.Active, _, err = rm.selected(ctx, name, nil); err != nil {
		return out, err
	}
	if out.Next, out.NextFile, err = rm.selected(ctx, name, files); err != nil {
		return out, err
	}
	if out.Next == "" && out.Active != "" && !rm.Force {
		return out, fmt.Errorf("%w: without %v, %s has no acceptable version in %s and the daemon would serve none of it (use --force)",
			ErrLastVersion, files, name, dir)
	}
	for _, f := range files {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			return out, fmt.Errorf("deploy: %w", err)
		}
	}
	// Each signature after its plugin: a plugin is never seen without its
	// signature, and none is left behind to warn at every start.
	for _, f := range files {
		switch err := os.Remove(filepath.Join(dir, f+".sig")); {
		case err == nil:
			out.Signatures = append(out.Signatures, f+".sig")
		case !errors.Is(err, os.ErrNotExist):
			return out, fmt.Errorf("deploy: %w", err)
		}
	}
	return out, syncDir(dir)
}

// selected returns the version of name the loader selects, leaving out the
// given files.
func (rm Remove) selected(ctx context.Context, name string, without []string) (string, string, error) {
	cfg := rm.Loader
	admit := cfg.Admit
	cfg.Admit = func(c *loader.Candidate) error {
		if c.Name != name {
			return errors.New("not the plugin being removed") // no need to probe others
		}
		if slices.Contains(without, c.File) {
			return errors.New("being removed")
		}
		if admit != nil {
			return admit(c)
		}
		return nil
	}
	sel, err := loader.New(cfg).Check(ctx)
	if err != nil && !errors.Is(err, loader.ErrNoAcceptable) && !errors.Is(err, loader.ErrNoCandidates) {
		return "", "", err
	}
	for _, c := range sel.Selected() {
		if c.Name == name {
			return c.Version.String(), c.File, nil
		}
	}
	return "", "", ctx.Err()
}
