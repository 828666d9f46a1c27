package loader

import (
	"fmt"
	"regexp"
	"strings"

	version "github.com/hashicorp/go-version"
)

// Suffix is the file name suffix of a native plugin.
const Suffix = ".so"

// Backend is how a plugin runs.
type Backend string

// The backends, told apart by the file name.
const (
	// Native: a .so opened in the runner's process (<name>_v<semver>.so).
	Native Backend = "native"
	// Process: an executable the runner starts and calls over gRPC
	// (<name>_v<semver>, no suffix), served by contract/serve.
	Process Backend = "process"
)

// CanonicalName returns the file name of a plugin version of a backend:
// <name>_v<version>.so or <name>_v<version>.
func CanonicalName(name string, v *version.Version, b Backend) string {
	if b == Process {
		return fmt.Sprintf("%s_v%s", name, v)
	}
	return fmt.Sprintf("%s_v%s%s", name, v, Suffix)
}

// ParseName splits a plugin file name of either backend, <name>_v<semver>.so
// (native) or <name>_v<semver> (an executable), into the plugin's name,
// version and backend; see ParseFileName.
func ParseName(file string) (string, *version.Version, Backend, error) {
	if strings.HasSuffix(file, Suffix) {
		name, v, err := ParseFileName(file)
		return name, v, Native, err
	}
	name, v, err := parseBase(file, file)
	if err != nil {
		return "", nil, "", fmt.Errorf("%w: %q is neither <name>_v<semver>%s nor an executable <name>_v<semver>", ErrBadName, file, Suffix)
	}
	return name, v, Process, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*(_[A-Za-z0-9.-]+)*$`)

// tempSuffixes are the endings editors, copy tools and deploy scripts give
// files that are still being written.
var tempSuffixes = []string{"~", ".tmp", ".temp", ".part", ".partial", ".swp", ".crdownload"}

// IsTempName reports whether a file name is a dotfile or a temporary or
// partial name (ending in ~, .tmp, .temp, .part, .partial, .swp or
// .crdownload). Such files are never candidates, and a change to one cannot
// change a selection.
func IsTempName(file string) bool {
	if strings.HasPrefix(file, ".") {
		return true
	}
	for _, s := range tempSuffixes {
		if strings.HasSuffix(file, s) {
			return true
		}
	}
	return false
}

// ParseFileName splits a plugin file name, <name>_v<semver>.so or
// <name>_<semver>.so, into the plugin's name and version. The version is
// parsed by github.com/hashicorp/go-version, so prereleases (1.2.0-rc.1) and
// build metadata (1.2.0+abc) are allowed. The name is letters, digits, '.',
// '-' and inner '_', starting with a letter or digit; the last '_' that is
// followed by a version separates the two.
func ParseFileName(file string) (name string, v *version.Version, err error) {
	base, ok := strings.CutSuffix(file, Suffix)
	if !ok || base == "" {
		return "", nil, fmt.Errorf("%w: %q has no %s suffix", ErrBadName, file, Suffix)
	}
	return parseBase(file, base)
}

// parseBase splits base, the file name without its suffix, at the last '_'
// followed by a version.
func parseBase(file, base string) (name string, v *version.Version, err error) {
	for i := strings.LastIndexByte(base, '_'); i > 0; i = strings.LastIndexByte(base[:i], '_') {
		v, verr := version.NewSemver(base[i+1:])
		if verr != nil {
			continue
		}
		name = base[:i]
		if !nameRE.MatchString(name) {
			return "", nil, fmt.Errorf("%w: %q: plugin name %q has characters outside [A-Za-z0-9._-]", ErrBadName, file, name)
		}
		return name, v, nil
	}
	return "", nil, fmt.Errorf("%w: %q has no _v<semver> before %s", ErrBadName, file, Suffix)
}
