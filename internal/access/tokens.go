// Package access guards the daemon's HTTP listener: bearer tokens with
// scopes, read from a file and compared in constant time, and TLS with a
// certificate reloaded when its files change.
//
// The tokens file has one token per line, its name, its scopes
// (comma-separated) and the token itself; '#' starts a comment:
//
//	# name   scopes             token
//	golem    transform          3q2+7w0c1Y6b8Jk...
//	ci       transform,append   Zb1t0o4nQe...
//	prom     control            h7Tn1...
//
// A scope lets a token call a group of routes (see ScopeOf): transform the
// transformers, append the oplog appends, control the rest (status, metrics,
// discovery). The health probes /healthz and /readyz need none.
package access

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Scope is a group of routes a token may call.
type Scope string

// The scopes.
const (
	// Transform: POST /v1/transform and /v1/transform/{plugin}.
	Transform Scope = "transform"
	// Append: POST /v1/workers/{id}/oplog.
	Append Scope = "append"
	// Control: every other route but the health probes: /v1/oplog,
	// /v1/health, /v1/discovery, /metrics.
	Control Scope = "control"
)

// Scopes are the scopes, in order.
var Scopes = []Scope{Transform, Append, Control}

// MinTokenBytes is the shortest token accepted: a guessable token is a
// mistake to refuse at start, not one to find in an audit.
const MinTokenBytes = 16

// MaxFileBytes bounds the tokens file.
const MaxFileBytes = 1 << 20

// ErrTokens is a tokens file that cannot be used: wrapped with the file,
// the line and the reason.
var ErrTokens = errors.New("access: bad tokens file")

// token is one line of the file: the token's digest, not the token.
type token struct {
	name   string
	scopes []Scope
	sum    [sha256.Size]byte
}

// Tokens is a parsed tokens file.
type Tokens struct {
	list []token
}

// LoadTokens reads the tokens file at path. A file others may read (mode
// o+r), a line without the three fields, an unknown scope, a token shorter
// than MinTokenBytes, and a name or token given twice are errors naming the
// file and the line.
func LoadTokens(path string) (*Tokens, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokens, err)
	}
	switch {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%w: %s: not a regular file", ErrTokens, path)
	case fi.Mode().Perm()&0o004 != 0:
		return nil, fmt.Errorf("%w: %s: mode %v lets every user read the tokens (chmod o-r)", ErrTokens, path, fi.Mode().Perm())
	case fi.Size() > MaxFileBytes:
		return nil, fmt.Errorf("%w: %s: %d bytes, larger than %d", ErrTokens, path, fi.Size(), MaxFileBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokens, err)
	}
	return ParseTokens(path, data)
}

// ParseTokens parses data as the tokens file named path.
func ParseTokens(path string, data []byte) (*Tokens, error) {
	t := &Tokens{}
	names := map[string]int{}
	sums := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, MaxFileBytes)
	for n := 1; sc.Scan(); n++ {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: %s:%d: %s", ErrTokens, path, n, fmt.Sprintf(format, args...))
		}
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 3 {
			return nil, bad("want three fields, name, scopes and token; got %d", len(fields))
		}
		tk := token{name: fields[0], sum: sha256.Sum256([]byte(fields[2]))}
		for _, s := range strings.Split(fields[1], ",") {
			if !slices.Contains(Scopes, Scope(s)) {
				return nil, bad("token %s: unknown scope %q (scopes: transform, append, control)", tk.name, s)
			}
			tk.scopes = append(tk.scopes, Scope(s))
		}
		if len(fields[2]) < MinTokenBytes {
			return nil, bad("token %s: %d bytes, shorter than %d (make one with: head -c 24 /dev/urandom | base64)", tk.name, len(fields[2]), MinTokenBytes)
		}
		if at, ok := names[tk.name]; ok {
			return nil, bad("name %s is also on line %d", tk.name, at)
		}
		if at, ok := sums[tk.sum]; ok {
			return nil, bad("token %s is the token of line %d too", tk.name, at)
		}
		names[tk.name], sums[tk.sum] = n, n
		t.list = append(t.list, tk)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrTokens, path, err)
	}
	return t, nil
}

// Len is how many tokens the file holds.
func (t *Tokens) Len() int { return len(t.list) }

// lookup returns the name and scopes of the token presented, comparing
// its digest with every token's in constant time (the time depends on how
// many tokens there are, never on how much of one matched); false when
// none is it.
func (t *Tokens) lookup(presented string) (string, []Scope, bool) {
	sum := sha256.Sum256([]byte(presented))
	found := -1
	for i := range t.list {
		if subtle.ConstantTimeCompare(sum[:], t.list[i].sum[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", nil, false
	}
	return t.list[found].name, t.list[found].scopes, true
}
