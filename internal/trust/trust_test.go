package trust_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/trust"
)

// setup makes a plugins folder with one plugin file, a key pair, and the
// file's manifest line.
func setup(t *testing.T) (dir, plugin string, priv ed25519.PrivateKey, pub ed25519.PublicKey, line string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "plugins")
	require.NoError(t, os.Mkdir(dir, 0o755))
	plugin = filepath.Join(dir, "p_v1.0.0.so")
	require.NoError(t, os.WriteFile(plugin, []byte("plugin bytes"), 0o644))
	keyPath := filepath.Join(t.TempDir(), "team.key")
	pub, err := trust.WriteKeys(keyPath)
	require.NoError(t, err)
	priv, err = trust.ReadPrivateKey(keyPath)
	require.NoError(t, err)
	pub2, err := trust.ReadPublicKey(keyPath + ".pub")
	require.NoError(t, err)
	require.Equal(t, pub, pub2)
	line = fmt.Sprintf("%x  p_v1.0.0.so\n", sha256.Sum256([]byte("plugin bytes")))
	return dir, plugin, priv, pub, line
}

func TestCheck(t *testing.T) {
	otherPub, _, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	cases := []struct {
		name   string
		policy func(dir string, pub ed25519.PublicKey, line string) *trust.Policy
		before func(t *testing.T, dir, plugin string, priv ed25519.PrivateKey)
		err    error
		msg    string
	}{
		{"zero policy, good modes", func(string, ed25519.PublicKey, string) *trust.Policy { return &trust.Policy{} }, nil, nil, ""},
		{"group-writable file", func(string, ed25519.PublicKey, string) *trust.Policy { return &trust.Policy{} },
			func(t *testing.T, _, plugin string, _ ed25519.PrivateKey) {
				require.NoError(t, os.Chmod(plugin, 0o664))
			},
			trust.ErrWritable, "the file"},
		{"world-writable folder", func(string, ed25519.PublicKey, string) *trust.Policy { return &trust.Policy{} },
			func(t *testing.T, dir, _ string, _ ed25519.PrivateKey) { require.NoError(t, os.Chmod(dir, 0o777)) },
			trust.ErrWritable, "the plugins folder"},
		{"symlink into a safe folder", func(string, ed25519.PublicKey, string) *trust.Policy { return &trust.Policy{} },
			func(t *testing.T, dir, plugin string, _ ed25519.PrivateKey) { linkInto(t, dir, plugin, 0o755) }, nil, ""},
		{"symlink into a world-writable folder", func(string, ed25519.PublicKey, string) *trust.Policy { return &trust.Policy{} },
			func(t *testing.T, dir, plugin string, _ ed25519.PrivateKey) { linkInto(t, dir, plugin, 0o777) },
			trust.ErrWritable, "the folder of the symlink's target"},
		{"owner not allowed", func(string, ed25519.PublicKey, string) *trust.Policy {
			return &trust.Policy{AllowedOwners: []uint32{4242}}
		},
			nil, trust.ErrOwner, "owned by uid"},
		{"insecure permissions", func(string, ed25519.PublicKey, string) *trust.Policy { return &trust.Policy{InsecurePermissions: true} },
			func(t *testing.T, _, plugin string, _ ed25519.PrivateKey) {
				require.NoError(t, os.Chmod(plugin, 0o666))
			}, nil, ""},
		{"listed in the manifest", func(dir string, _ ed25519.PublicKey, line string) *trust.Policy {
			return &trust.Policy{Manifest: manifest(t, dir, "# plugins\n\n"+line)}
		}, nil, nil, ""},
		{"not in the manifest", func(dir string, _ ed25519.PublicKey, _ string) *trust.Policy {
			return &trust.Policy{Manifest: manifest(t, dir, "")}
		}, nil, trust.ErrNotListed, "lists no p_v1.0.0.so"},
		{"another digest in the manifest", func(dir string, _ ed25519.PublicKey, _ string) *trust.Policy {
			return &trust.Policy{Manifest: manifest(t, dir, fmt.Sprintf("%x *p_v1.0.0.so\n", sha256.Sum256([]byte("other"))))}
		}, nil, trust.ErrDigest, "the file has"},
		{"malformed manifest", func(dir string, _ ed25519.PublicKey, line string) *trust.Policy {
			return &trust.Policy{Manifest: manifest(t, dir, line+"not a line\n")}
		}, nil, trust.ErrManifest, "SHA256SUMS:2: want"},
		{"missing manifest", func(dir string, _ ed25519.PublicKey, _ string) *trust.Policy {
			return &trust.Policy{Manifest: filepath.Join(dir, "nope")}
		}, nil, trust.ErrManifest, "nope"},
		{"signed", func(_ string, pub ed25519.PublicKey, _ string) *trust.Policy {
			return &trust.Policy{Keys: []ed25519.PublicKey{otherPub, pub}}
		}, func(t *testing.T, _, plugin string, priv ed25519.PrivateKey) {
			require.NoError(t, trust.Sign(priv, plugin, ""))
		}, nil, ""},
		{"unsigned", func(_ string, pub ed25519.PublicKey, _ string) *trust.Policy {
			return &trust.Policy{Keys: []ed25519.PublicKey{pub}}
		}, nil, trust.ErrUnsigned, "no p_v1.0.0.so.sig"},
		{"signed by another key", func(string, ed25519.PublicKey, string) *trust.Policy {
			return &trust.Policy{Keys: []ed25519.PublicKey{otherPub}}
		}, func(t *testing.T, _, plugin string, priv ed25519.PrivateKey) {
			require.NoError(t, trust.Sign(priv, plugin, ""))
		},
			trust.ErrSignature, "by any of the 1 trusted keys"},
		{"signed for another version", func(_ string, pub ed25519.PublicKey, _ string) *trust.Policy {
			return &trust.Policy{Keys: []ed25519.PublicKey{pub}}
		}, func(t *testing.T, _, plugin string, priv ed25519.PrivateKey) {
			require.NoError(t, trust.Sign(priv, plugin, "p_v0.9.0.so"))
		}, trust.ErrSignature, "is not a signature of p_v1.0.0.so"},
		{"garbled signature", func(_ string, pub ed25519.PublicKey, _ string) *trust.Policy {
			return &trust.Policy{Keys: []ed25519.PublicKey{pub}}
		}, func(t *testing.T, _, plugin string, _ ed25519.PrivateKey) {
			require.NoError(t, os.WriteFile(plugin+".sig", []byte("!!"), 0o644))
		}, trust.ErrSignature, "not the base64"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, plugin, priv, pub, line := setup(t)
			if tc.before != nil {
				tc.before(t, dir, plugin, priv)
			}
			err := tc.policy(dir, pub, line).Check(plugin, "")
			if tc.err == nil {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, tc.err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

// linkInto moves plugin into a subfolder of dir with mode perm and leaves
// a symlink to it in its place.
func linkInto(t *testing.T, dir, plugin string, perm os.FileMode) {
	sub := filepath.Join(dir, "releases")
	require.NoError(t, os.Mkdir(sub, 0o755))
	require.NoError(t, os.Chmod(sub, perm))
	target := filepath.Join(sub, filepath.Base(plugin))
	require.NoError(t, os.Rename(plugin, target))
	require.NoError(t, os.Symlink("releases/"+filepath.Base(plugin), plugin))
}

func manifest(t *testing.T, dir, content string) string {
	p := filepath.Join(dir, "SHA256SUMS")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

// TestDigestOncePerIdentity: the digest of an unchanged file is not read
// again; a rewritten file is.
func TestDigestOncePerIdentity(t *testing.T) {
	_, plugin, _, _, _ := setup(t)
	var p trust.Policy
	d1, err := p.Digest(plugin)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(plugin, 0o000)) // unreadable now: a second read would fail
	d2, err := p.Digest(plugin)
	require.NoError(t, err, "served from the cache")
	assert.Equal(t, d1, d2)
	require.NoError(t, os.Chmod(plugin, 0o644))
	require.NoError(t, os.WriteFile(plugin, []byte("new bytes"), 0o644))
	d3, err := p.Digest(plugin)
	require.NoError(t, err)
	assert.Equal(t, sha256.Sum256([]byte("new bytes")), d3)
}

func TestWriteKeysRefusesToOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	_, err := trust.WriteKeys(path)
	require.NoError(t, err)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	_, err = trust.WriteKeys(path)
	assert.ErrorIs(t, err, os.ErrExist)
}

// FuzzParseManifest: any manifest either parses into 32-byte digests or is
// refused with ErrManifest and a line number.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(fmt.Sprintf("%x  a_v1.0.0.so\n%x *b_v2.so\r\n# c\n\n", sha256.Sum256(nil), sha256.Sum256([]byte("b")))))
	f.Add([]byte("zz  a.so\n"))
	f.Add([]byte(fmt.Sprintf("%x  ../a.so\n", sha256.Sum256(nil))))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := trust.ParseManifest("SHA256SUMS", data)
		if err != nil {
			assert.ErrorIs(t, err, trust.ErrManifest)
			assert.Contains(t, err.Error(), "SHA256SUMS")
			return
		}
		for file := range m {
			assert.NotContains(t, file, "/")
			assert.NotEmpty(t, file)
		}
	})
}

// TestKeyKinds: a private key file is never taken for a public one, nor
// the reverse.
func TestKeyKinds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	_, err := trust.WriteKeys(path)
	require.NoError(t, err)
	_, err = trust.ReadPublicKey(path)
	assert.ErrorIs(t, err, trust.ErrKey)
	_, err = trust.ReadPrivateKey(path + ".pub")
	assert.ErrorIs(t, err, trust.ErrKey)
}
