// Package trust decides whether a plugin file is one the operator meant to
// load. A plugin runs with the daemon's privileges, so whoever can write
// the plugins folder can run code as the service: like sshd's StrictModes,
// Policy refuses a file or folder that someone other than its allowed
// owners could have written, and, when the operator asks for it, a file
// whose SHA-256 digest is not in a manifest or that carries no valid
// ed25519 signature by a trusted key.
//
// The manifest is the output format of sha256sum: one line per file, the
// hex digest, two spaces (or a space and '*'), and the file's base name.
// Blank lines and lines starting with '#' are skipped.
//
// A signature is the file <plugin>.sig beside the plugin: the base64 of an
// ed25519 signature of Message(name, digest), where name is the plugin's
// canonical file name (<name>_v<version>.so), so a signature cannot be
// reused for another name or version. A key file is one line, its kind and
// the base64 of the key: "soplug-ed25519-public <32 bytes>" or
// "soplug-ed25519-private <the 32-byte seed>".
package trust

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// Refusals, wrapped with the detail.
var (
	// ErrWritable: the file or its folder is group- or world-writable.
	ErrWritable = errors.New("trust: writable by others")
	// ErrOwner: the file or its folder is owned by a user not allowed.
	ErrOwner = errors.New("trust: owner not allowed")
	// ErrNotListed: the manifest does not list the file.
	ErrNotListed = errors.New("trust: not in the manifest")
	// ErrDigest: the file's digest is not the manifest's.
	ErrDigest = errors.New("trust: digest does not match the manifest")
	// ErrUnsigned: the file has no signature.
	ErrUnsigned = errors.New("trust: unsigned")
	// ErrSignature: no trusted key verifies the signature.
	ErrSignature = errors.New("trust: bad signature")
	// ErrManifest: the manifest cannot be read or parsed.
	ErrManifest = errors.New("trust: bad manifest")
	// ErrKey: a key file cannot be read or parsed.
	ErrKey = errors.New("trust: bad key")
)

// SigSuffix is appended to a plugin's file name to name its signature.
const SigSuffix = ".sig"

// Policy is what the operator trusts. The zero value checks owners (root
// and this process's user) and modes, and asks for no manifest and no
// signature.
type Policy struct {
	// AllowedOwners are the user IDs that may own the plugins folder and
	// its plugin files. Empty means root and the user this process runs as.
	AllowedOwners []uint32
	// InsecurePermissions skips the owner and mode checks, for development.
	InsecurePermissions bool
	// Manifest is the path of a SHA256SUMS-format file. When set, every
	// plugin file must be listed in it with its digest.
	Manifest string
	// Keys are trusted public keys. When any is given, every plugin file
	// needs a signature by one of them.
	Keys []ed25519.PublicKey

	mu       sync.Mutex
	digests  map[string][sha256.Size]byte // by file identity
	manifest map[string][sha256.Size]byte
	loaded   bool
	loadErr  error
}

// ManifestSum returns the SHA-256 the manifest lists for the plugin of
// canonical name name, or nil when no manifest is set.
func (p *Policy) ManifestSum(name string) ([]byte, error) {
	if p.Manifest == "" {
		return nil, nil
	}
	m, err := p.loadManifest()
	if err != nil {
		return nil, err
	}
	want, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s lists no %s", ErrNotListed, p.Manifest, name)
	}
	return want[:], nil
}

// Check returns nil when the policy trusts the plugin file at path, whose
// canonical name is name (<name>_v<version>.so; its base name when empty),
// or an error wrapping one of the refusals.
func (p *Policy) Check(path, name string) error {
	if name == "" {
		name = filepath.Base(path)
	}
	if !p.InsecurePermissions {
		if err := p.checkMode(filepath.Dir(path), "the plugins folder"); err != nil {
			return err
		}
		if err := p.checkMode(path, "the file"); err != nil {
			return err
		}
		// A symlink's target is replaced through its own folder: that
		// folder is held to the same rules.
		if target, err := filepath.EvalSymlinks(path); err == nil {
			real, _ := filepath.EvalSymlinks(filepath.Dir(path))
			if td := filepath.Dir(target); td != real {
				if err := p.checkMode(td, "the folder of the symlink's target"); err != nil {
					return err
				}
			}
		}
	}
	if p.Manifest == "" && len(p.Keys) == 0 {
		return nil
	}
	digest, err := p.Digest(path)
	if err != nil {
		return err
	}
	if p.Manifest != "" {
		m, err := p.loadManifest()
		if err != nil {
			return err
		}
		want, ok := m[name] // the canonical name, then the file's own
		if !ok {
			want, ok = m[filepath.Base(path)]
		}
		switch {
		case !ok:
			return fmt.Errorf("%w: %s lists no %s", ErrNotListed, p.Manifest, name)
		case want != digest:
			return fmt.Errorf("%w: %s lists sha256 %x, the file has %x", ErrDigest, p.Manifest, want, digest)
		}
	}
	if len(p.Keys) > 0 {
		sig, err := ReadSignature(path + SigSuffix)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: no %s", ErrUnsigned, filepath.Base(path)+SigSuffix)
		}
		if err != nil {
			return err
		}
		msg := Message(name, digest)
		if !slices.ContainsFunc(p.Keys, func(k ed25519.PublicKey) bool { return ed25519.Verify(k, msg, sig) }) {
			return fmt.Errorf("%w: %s is not a signature of %s (sha256 %x) by any of the %d trusted keys",
				ErrSignature, filepath.Base(path)+SigSuffix, name, digest, len(p.Keys))
		}
	}
	return nil
}

// checkMode refuses a path writable by group or others, or owned by a user
// not allowed.
func (p *Policy) checkMode(path, what string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o022 != 0 {
		return fmt.Errorf("%w: %s %s has mode %04o (chmod go-w)", ErrWritable, what, path, m)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	allowed := p.AllowedOwners
	if len(allowed) == 0 {
		allowed = []uint32{0, uint32(os.Geteuid())}
	}
	if !slices.Contains(allowed, st.Uid) {
		return fmt.Errorf("%w: %s %s is owned by uid %d; allowed: %v", ErrOwner, what, path, st.Uid, allowed)
	}
	return nil
}

// Digest returns the SHA-256 of the file at path, read once per file
// identity (device, inode, size, modification and change times).
func (p *Policy) Digest(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, fmt.Errorf("trust: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return sum, fmt.Errorf("trust: %w", err)
	}
	id := identity(fi)
	p.mu.Lock()
	sum, ok := p.digests[id]
	p.mu.Unlock()
	if ok && id != "" {
		return sum, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, fmt.Errorf("trust: reading %s: %w", path, err)
	}
	copy(sum[:], h.Sum(nil))
	if id != "" {
		p.mu.Lock()
		if p.digests == nil {
			p.digests = map[string][sha256.Size]byte{}
		}
		p.digests[id] = sum
		p.mu.Unlock()
	}
	return sum, nil
}

func identity(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d:%d:%d:%d.%d:%d.%d", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
}

func (p *Policy) loadManifest() (map[string][sha256.Size]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.loaded {
		p.manifest, p.loadErr = ReadManifest(p.Manifest)
		p.loaded = true
	}
	return p.manifest, p.loadErr
}

// ReadManifest reads a SHA256SUMS-format file into digests by base name.
func ReadManifest(path string) (map[string][sha256.Size]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	return ParseManifest(path, data)
}

// ParseManifest parses the content of a SHA256SUMS-format file; path names
// it in errors.
func ParseManifest(path string, data []byte) (map[string][sha256.Size]byte, error) {
	m := map[string][sha256.Size]byte{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		hexsum, file, ok := strings.Cut(line, " ")
		file = strings.TrimPrefix(strings.TrimPrefix(file, " "), "*")
		var sum [sha256.Size]byte
		if b, err := hex.DecodeString(hexsum); !ok || err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%w: %s:%d: want \"<64 hex digits>  <file>\", got %q", ErrManifest, path, n, truncate(line))
		} else {
			copy(sum[:], b)
		}
		if file == "" || strings.ContainsRune(file, '/') {
			return nil, fmt.Errorf("%w: %s:%d: %q is not a file name in the plugins folder", ErrManifest, path, n, file)
		}
		if prev, dup := m[file]; dup && prev != sum {
			return nil, fmt.Errorf("%w: %s:%d: %s is listed twice with different digests", ErrManifest, path, n, file)
		}
		m[file] = sum
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrManifest, path, err)
	}
	return m, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Message is what a signature signs: the plugin's canonical file name and
// the SHA-256 of its content.
func Message(name string, digest [sha256.Size]byte) []byte {
	return fmt.Appendf(nil, "soplug plugin signature v1\nfile: %s\nsha256: %x\n", name, digest)
}

// ReadSignature reads a .sig file.
func ReadSignature(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: %s is not the base64 of a %d-byte ed25519 signature", ErrSignature, path, ed25519.SignatureSize)
	}
	return sig, nil
}

// The kinds of key file.
const (
	publicKind  = "soplug-ed25519-public"
	privateKind = "soplug-ed25519-private"
)

// ReadPublicKey reads a public key file.
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := readKey(path, publicKind, ed25519.PublicKeySize)
	return ed25519.PublicKey(b), err
}

// ReadPrivateKey reads a private key file (its seed).
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := readKey(path, privateKind, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(b), nil
}

func readKey(path, kind string, size int) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	gotKind, enc, _ := strings.Cut(strings.TrimSpace(string(data)), " ")
	if gotKind != kind {
		return nil, fmt.Errorf("%w: %s is not a %s key file (it starts with %q)", ErrKey, path, kind, truncate(gotKind))
	}
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("%w: %s: not the base64 of %d bytes", ErrKey, path, size)
	}
	return b, nil
}

// WriteKeys makes a new key pair and writes the private key to path (mode
// 0600, refusing to overwrite) and the public key to path.pub.
func WriteKeys(path string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	if err := writeNew(path, privateKind+" "+base64.StdEncoding.EncodeToString(priv.Seed())+"\n", 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(path+".pub", publicKind+" "+base64.StdEncoding.EncodeToString(pub)+"\n", 0o644); err != nil {
		return nil, err
	}
	return pub, nil
}

func writeNew(path, content string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	_, werr := f.WriteString(content)
	return errors.Join(werr, f.Sync(), f.Close())
}

// Sign writes path.sig, the signature by priv of the plugin file at path
// under its canonical name (its base name when name is empty).
func Sign(priv ed25519.PrivateKey, path, name string) error {
	if name == "" {
		name = filepath.Base(path)
	}
	var p Policy
	digest, err := p.Digest(path)
	if err != nil {
		return err
	}
	sig := ed25519.Sign(priv, Message(name, digest))
	return os.WriteFile(path+SigSuffix, []byte(base64.StdEncoding.EncodeToString(sig)+"\n"), 0o644)
}
