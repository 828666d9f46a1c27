package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/fixtures"
)

// TestTrustRefusalsFallBack: each refusal of the trust checks rejects the
// newest version at the admit stage with its reason, and the selection falls
// back to the older, trusted one.
func TestTrustRefusalsFallBack(t *testing.T) {
	keys := t.TempDir()
	key := filepath.Join(keys, "team.key")
	code, out, errs := runner(t, "keygen", key)
	require.Equal(t, exitcode.OK, code, "%s%s", out, errs)

	cases := []struct {
		name   string
		flags  func(dir string) []string
		setup  func(t *testing.T, dir string)
		reason string
	}{
		{"group-writable newest", func(string) []string { return nil },
			func(t *testing.T, dir string) { require.NoError(t, os.Chmod(filepath.Join(dir, "p_v1.2.0.so"), 0o664)) },
			"trust: writable by others: the file"},
		{"owner not allowed", func(string) []string { return []string{"--allowed-owner", "4242"} },
			func(t *testing.T, dir string) {
				require.NoError(t, os.Chown(filepath.Join(dir, "p_v1.2.0.so"), 4242, 4242))
				require.NoError(t, os.Chown(dir, 4242, 4242))
				require.NoError(t, os.Chown(filepath.Join(dir, "p_v1.1.0.so"), 4242, 4242))
				require.NoError(t, os.Chown(filepath.Join(dir, "p_v1.2.0.so"), 1000, 1000))
			}, "trust: owner not allowed: the file"},
		{"unsigned newest", func(string) []string { return []string{"--trusted-key", key + ".pub"} },
			func(t *testing.T, dir string) {
				code, out, errs := runner(t, "plugins", "sign", "--key", key, filepath.Join(dir, "p_v1.1.0.so"))
				require.Equal(t, exitcode.OK, code, "%s%s", out, errs)
			}, "trust: unsigned: no p_v1.2.0.so.sig"},
		{"signed by an untrusted key", func(string) []string { return []string{"--trusted-key", key + ".pub"} },
			func(t *testing.T, dir string) {
				other := filepath.Join(t.TempDir(), "other.key")
				code, _, _ := runner(t, "keygen", other)
				require.Equal(t, exitcode.OK, code)
				code, _, _ = runner(t, "plugins", "sign", "--key", other, filepath.Join(dir, "p_v1.2.0.so"))
				require.Equal(t, exitcode.OK, code)
				code, _, _ = runner(t, "plugins", "sign", "--key", key, filepath.Join(dir, "p_v1.1.0.so"))
				require.Equal(t, exitcode.OK, code)
			}, "trust: bad signature: p_v1.2.0.so.sig is not a signature of p_v1.2.0.so"},
		{"digest not in the manifest", func(dir string) []string { return []string{"--manifest", filepath.Join(dir, "SHA256SUMS")} },
			func(t *testing.T, dir string) {
				sums := ""
				for _, f := range []string{"p_v1.1.0.so", "p_v1.2.0.so"} {
					data, err := os.ReadFile(filepath.Join(dir, f))
					require.NoError(t, err)
					if f == "p_v1.2.0.so" {
						data = append(data, 0) // the manifest was made for other bytes
					}
					sums += fmt.Sprintf("%x  %s\n", sha256.Sum256(data), f)
				}
				require.NoError(t, os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sums), 0o644))
			}, "trust: digest does not match the manifest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyPlugins(t, "good-1.1.0=p_v1.1.0.so", "good-1.2.0=p_v1.2.0.so")
			tc.setup(t, dir)
			args := append([]string{"plugins", "check", "--plugins", dir}, tc.flags(dir)...)
			code, out, errs := runner(t, args...)
			assert.Equal(t, exitcode.OK, code, "%s%s", out, errs)
			assert.Regexp(t, `p\s+1\.2\.0\s+-\s+rejected\s+admit\s+p_v1\.2\.0\.so\s+not admitted: `+regexpQuote(tc.reason), out)
			assert.Regexp(t, `p\s+1\.1\.0\s+transformer\s+selected`, out)
		})
	}
}

func regexpQuote(s string) string {
	out := ""
	for _, r := range s {
		if string(r) == "." || string(r) == "(" || string(r) == ")" {
			out += `\`
		}
		out += string(r)
	}
	return out
}

func TestSignAndVerify(t *testing.T) {
	dir := copyPlugins(t, "good-1.1.0=p_v1.1.0.so")
	key := filepath.Join(t.TempDir(), "k")
	code, _, _ := runner(t, "keygen", key)
	require.Equal(t, exitcode.OK, code)
	plugin := filepath.Join(dir, "p_v1.1.0.so")
	code, out, errs := runner(t, "plugins", "verify", "--trusted-key", key+".pub", plugin)
	assert.Equal(t, exitcode.Failure, code, out)
	assert.Contains(t, errs, "unsigned")
	code, _, _ = runner(t, "plugins", "sign", "--key", key, plugin)
	require.Equal(t, exitcode.OK, code)
	code, out, _ = runner(t, "plugins", "verify", "--trusted-key", key+".pub", plugin)
	assert.Equal(t, exitcode.OK, code)
	assert.Contains(t, out, "trusted")
	code, _, errs = runner(t, "plugins", "verify", "--trusted-key", key, plugin) // the private key is not a public key
	assert.Equal(t, exitcode.Usage, code)
	assert.Contains(t, errs, "is not a soplug-ed25519-public key file")
}

// TestInstallUnderATrustPolicy: install refuses an unsigned plugin, leaving
// the folder as it was, and installs a signed one with its signature.
func TestInstallUnderATrustPolicy(t *testing.T) {
	key := filepath.Join(t.TempDir(), "k")
	code, _, _ := runner(t, "keygen", key)
	require.Equal(t, exitcode.OK, code)
	dir := copyPlugins(t, "good-1.1.0=p_v1.1.0.so")
	src := filepath.Join(t.TempDir(), "build.so")
	data, err := os.ReadFile(fixtures.Path(t, "good-1.2.0"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(src, data, 0o644))

	code, out, errs := runner(t, "plugins", "install", "--plugins", dir, "--trusted-key", key+".pub", "--name", "p", src)
	assert.Equal(t, exitcode.Failure, code, out)
	assert.Contains(t, errs, "trust: unsigned")
	entries, _ := os.ReadDir(dir)
	assert.Len(t, entries, 1, "the folder is as it was")

	code, _, errs = runner(t, "plugins", "sign", "--key", key, "--name", "p_v1.2.0.so", src)
	require.Equal(t, exitcode.OK, code, errs)
	code, out, errs = runner(t, "plugins", "install", "--plugins", dir, "--trusted-key", key+".pub", "--name", "p", src)
	require.Equal(t, exitcode.OK, code, "%s%s", out, errs)
	assert.Regexp(t, `admit\s+admission \(trust, quarantine\)\s+ok`, out)
	for _, f := range []string{"p_v1.2.0.so", "p_v1.2.0.so.sig"} {
		_, err := os.Stat(filepath.Join(dir, f))
		assert.NoError(t, err, f)
	}
	code, out, _ = runner(t, "plugins", "check", "--plugins", dir, "--trusted-key", key+".pub")
	assert.Equal(t, exitcode.OK, code, "p 1.2.0 is signed and selected; the unsigned 1.1.0 is older, not tried:\n%s", out)
	assert.Regexp(t, `p\s+1\.2\.0\s+transformer\s+selected`, out)
	assert.Regexp(t, `p_v1\.2\.0\.so\.sig\s+name is not <name>_v<semver>\.so: a signature or manifest for the trust checks`, out)
}
