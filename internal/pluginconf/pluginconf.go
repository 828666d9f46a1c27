// Package pluginconf reads the installation configuration of plugins: a
// TOML file that gives each installed plugin name its key/value
// configuration, says which keys a request may override, and orders the
// transformers that POST /v1/transform runs.
//
//	# Which transformers /v1/transform runs, in this order.
//	chain = ["wasmtag", "wasmdigest"]
//
//	[plugins.wasmtag]
//	overridable = ["env"]          # a request may set these
//	golem_drop_extras = true       # a raw answer to Golem 1.1/1.2 drops added files
//
//	[plugins.wasmtag.config]
//	team = "edge"
//	env = "prod"
//
// A plugin is defined by its name and version (its file); the
// configuration belongs to the name, so it carries over to a new version.
// Every error names the file and the line, and wraps ErrSyntax or
// ErrInvalid.
package pluginconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/soplug/soplug/contract"
)

// Errors of Load and Validate, wrapped with the file, the line and the
// detail; check them with errors.Is.
var (
	// ErrSyntax: the file is not TOML, or a value has the wrong type.
	ErrSyntax = errors.New("pluginconf: syntax error")
	// ErrInvalid: the file parses but says something that cannot be: an
	// unknown plugin or setting, a value that is not a string, a chain
	// that names a plugin twice.
	ErrInvalid = errors.New("pluginconf: invalid configuration")
)

// MaxFileSize bounds the file Load reads: a configuration, not a data file.
const MaxFileSize = 1 << 20

// Installation is one plugin name's configuration.
type Installation struct {
	// Config is what the plugin receives: contract.Config of its Transform
	// or Init calls. Never nil.
	Config contract.Config `json:"config"`
	// Overridable are the keys a request may set, sorted.
	Overridable []string `json:"overridable,omitempty"`
	// GolemDropExtras lets a raw answer to Golem 1.1 or 1.2, which carries
	// the component alone, drop the files and environment entries the
	// plugin added (package contract/golem); false refuses such a call
	// with a 422 naming the release.
	GolemDropExtras bool `json:"golem_drop_extras,omitempty"`
}

// AnyKey in overridable lets a request set every key: the switch for a
// plugin whose configuration Golem's installation owns.
const AnyKey = "*"

// CanOverride reports whether a request may set key: one Overridable
// lists, or, when it lists AnyKey, any key Golem's installations may have
// (any text without control characters but AnyKey itself: Golem sends
// unusual names in RFC 2231's name*= form), so that a parameter reaches the plugin
// under its own name.
func (in Installation) CanOverride(key string) bool {
	if _, ok := slices.BinarySearch(in.Overridable, key); ok && key != AnyKey {
		return true
	}
	_, any := slices.BinarySearch(in.Overridable, AnyKey)
	return any && key != "" && key != AnyKey && utf8.ValidString(key) && !strings.ContainsFunc(key, unicode.IsControl)
}

// ValidKey reports whether key can be a configuration key of the file:
// letters, digits, '_', '.' and '-', not starting with '.' or '-'.
func ValidKey(key string) bool { return keyRE.MatchString(key) }

// File is a parsed configuration file. The zero File configures nothing:
// every plugin gets an empty Config and no chain is set.
type File struct {
	// Path is the file that was read; empty for the zero File.
	Path string `json:"path,omitempty"`
	// Chain is the order of transformers POST /v1/transform runs; empty
	// means the one installed transformer.
	Chain []string `json:"chain,omitempty"`
	// Plugins maps plugin names to their installation.
	Plugins map[string]Installation `json:"plugins,omitempty"`

	lines map[string]int // dotted key path → the line it is set on
}

// For returns the installation of the plugin name: its configured one, or
// an empty one.
func (f *File) For(name string) Installation {
	if in, ok := f.Plugins[name]; ok {
		return in
	}
	return Installation{Config: contract.Config{}}
}

// raw is the file's shape as the TOML decoder fills it.
type raw struct {
	Chain   []string             `toml:"chain"`
	Plugins map[string]rawPlugin `toml:"plugins"`
}

type rawPlugin struct {
	Config      map[string]any `toml:"config"`
	Overridable []string       `toml:"overridable"`
	DropExtras  bool           `toml:"golem_drop_extras"`
}

// keyRE is what a configuration key may look like: it travels in query
// strings and metrics, so no spaces or '='.
var keyRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// Load reads and parses the file at path. Unknown settings, values that are
// not strings and malformed TOML are errors naming path and the line.
// Whether the plugin names exist is Validate's question.
func Load(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pluginconf: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("pluginconf: %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", ErrSyntax, path, MaxFileSize)
	}
	return Parse(path, data)
}

// Parse parses data as the configuration file named path.
func Parse(path string, data []byte) (*File, error) {
	var r raw
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, decodeError(path, err)
	}
	f := &File{Path: path, Chain: r.Chain, Plugins: map[string]Installation{}, lines: keyLines(data)}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(r.Plugins)) {
		rp := r.Plugins[name]
		in := Installation{Config: contract.Config{}, GolemDropExtras: rp.DropExtras}
		for _, k := range slices.Sorted(maps.Keys(rp.Config)) {
			at := "plugins." + name + ".config." + k
			if !keyRE.MatchString(k) {
				errs = append(errs, f.errorf(at, "key %q: use letters, digits, '_', '.' and '-'", k))
				continue
			}
			s, ok := rp.Config[k].(string)
			if !ok {
				errs = append(errs, f.errorf(at, "%s: the value must be a string, not %s (quote it: %s = \"%v\")", at, tomlType(rp.Config[k]), k, rp.Config[k]))
				continue
			}
			in.Config[k] = s
		}
		for _, k := range rp.Overridable {
			if !keyRE.MatchString(k) && k != AnyKey {
				errs = append(errs, f.errorf("plugins."+name+".overridable", "overridable key %q: use letters, digits, '_', '.' and '-', or %q for every key", k, AnyKey))
			}
		}
		in.Overridable = slices.Compact(slices.Sorted(slices.Values(rp.Overridable)))
		f.Plugins[name] = in
	}
	seen := map[string]bool{}
	for _, name := range f.Chain {
		if seen[name] {
			errs = append(errs, f.errorf("chain", "chain names %q twice", name))
		}
		seen[name] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return f, nil
}

// Validate checks the file against the plugin names installed in the
// plugins folder: every configured or chained name must be one of them.
func (f *File) Validate(installed []string) error {
	if f == nil {
		return nil
	}
	known := map[string]bool{}
	for _, n := range installed {
		known[n] = true
	}
	list := strings.Join(slices.Compact(slices.Sorted(slices.Values(installed))), ", ")
	if list == "" {
		list = "none"
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(f.Plugins)) {
		if !known[name] {
			errs = append(errs, f.errorf("plugins."+name, "unknown plugin %q (installed: %s)", name, list))
		}
	}
	for _, name := range f.Chain {
		if !known[name] {
			errs = append(errs, f.errorf("chain", "chain names unknown plugin %q (installed: %s)", name, list))
		}
	}
	return errors.Join(errs...)
}

// Line returns the line the dotted key path is set on, or 0.
func (f *File) Line(path string) int { return f.lines[path] }

// Invalid returns an error wrapping ErrInvalid that names the file and the
// line of the dotted key path, for a check made outside this package (that
// a chained plugin is a transformer, say).
func (f *File) Invalid(path, format string, args ...any) error {
	return f.errorf(path, format, args...)
}

// errorf returns an ErrInvalid error at the line of the key path.
func (f *File) errorf(path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if line := f.Line(path); line > 0 {
		return fmt.Errorf("%w: %s:%d: %s", ErrInvalid, f.Path, line, msg)
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalid, f.Path, msg)
}

// decodeError turns the TOML decoder's errors into ones naming the file and
// line.
func decodeError(path string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var errs []error
		for _, e := range strict.Errors {
			row, _ := e.Position()
			errs = append(errs, fmt.Errorf("%w: %s:%d: unknown setting %q (a plugin's settings are config and overridable)",
				ErrInvalid, path, row, strings.Join(e.Key(), ".")))
		}
		return errors.Join(errs...)
	}
	var derr *toml.DecodeError
	if errors.As(err, &derr) {
		row, col := derr.Position()
		return fmt.Errorf("%w: %s:%d:%d: %s", ErrSyntax, path, row, col, derr.Error())
	}
	return fmt.Errorf("%w: %s: %v", ErrSyntax, path, err)
}

func tomlType(v any) string {
	switch v.(type) {
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date or time"
}
