package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/fixtures"
	"github.com/soplug/soplug/loader/probe"
)

// TestMain lets the test binary act as the runner's probe child.
func TestMain(m *testing.M) {
	if code, ok := probe.Dispatch(os.Args); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

const examples = "../../plugins"

// fixture copies a built fixture plugin into dir as file.
func fixture(t *testing.T, dir, name, file string) {
	t.Helper()
	data, err := os.ReadFile(fixtures.Path(t, name))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, file), data, 0o755))
}

func runner(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runMain(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheckExamples(t *testing.T) {
	_, err := os.Stat(filepath.Join(examples, "wasmtag_v2.0.0.so"))
	require.NoError(t, err, "run ./build_plugins.sh first")
	t.Setenv("SOPLUG_WASMTAG_V2", "")

	code, out, _ := runner(t, "plugins", "check", "--plugins", examples)
	assert.Equal(t, exitcode.OK, code, out)
	assert.Regexp(t, `wasmtag\s+2\.0\.0\s+transformer\s+rejected\s+probe\s+wasmtag_v2\.0\.0\.so\s+not acceptable on this host: IsAcceptable\(\) returned false`, out)
	assert.Regexp(t, `wasmtag\s+1\.1\.0\s+transformer\s+selected`, out)
	assert.Regexp(t, `wasmtag\s+1\.0\.0\s+-\s+not tried`, out)
	assert.Contains(t, out, "selected: wasmtag 1.1.0 (transformer) from wasmtag_v1.1.0.so")
	assert.Contains(t, out, "selected: kindcount 1.0.0 (oplog-processor) from kindcount_v1.0.0.so")

	code, out, _ = runner(t, "plugins", "check", "--plugins", examples, "--json")
	assert.Equal(t, exitcode.OK, code)
	var rep struct {
		OK         bool
		Candidates []struct{ File, Verdict, Stage, Reason string }
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	assert.True(t, rep.OK)
	verdicts := map[string]string{}
	for _, c := range rep.Candidates {
		verdicts[c.File] = c.Verdict
	}
	// Every example loads, those that know nothing of the Golem extension
	// (contract/golem) beside golemmeta, which uses it.
	assert.Equal(t, map[string]string{
		"golemmeta_v1.0.0.so": "selected", "kindcount_v1.0.0.so": "selected", "wasmdigest_v1.0.0.so": "selected", "wasmtag_v2.0.0.so": "rejected", "wasmtag_v1.1.0.so": "selected",
		"wasmtag_v1.0.0.so": "not tried", "README.md": "rejected", ".gitignore": "rejected",
	}, verdicts)
}

func TestCheckFailures(t *testing.T) {
	noGood := t.TempDir()
	fixture(t, noGood, "notacceptable", "p_v2.0.0.so")
	fixture(t, noGood, "initpanic", "p_v1.0.0.so")
	empty := t.TempDir()

	cases := []struct {
		name     string
		args     []string
		code     int
		contains []string
	}{
		{"no acceptable version", []string{"plugins", "check", "--plugins", noGood}, exitcode.NoPlugin,
			[]string{"p_v2.0.0.so", "IsAcceptable() returned false", "p_v1.0.0.so", "initpanic: cannot start", "error: loader: no acceptable version: p"}},
		{"no plugin at all", []string{"plugins", "check", "--plugins", empty}, exitcode.NoPlugin, []string{"no plugin candidates in " + empty}},
		{"missing folder", []string{"plugins", "check", "--plugins", filepath.Join(empty, "nope")}, exitcode.NoInput, []string{"nope", "no such file or directory"}},
		{"unknown flag", []string{"plugins", "check", "--bogus"}, exitcode.Usage, []string{"-bogus"}},
		{"stray argument", []string{"plugins", "check", "extra"}, exitcode.Usage, []string{"unexpected arguments"}},
		{"unknown command", []string{"frobnicate"}, exitcode.Usage, []string{"unknown command", "usage:"}},
		{"run with a bad flag", []string{"run", "--listen"}, exitcode.Usage, []string{"flag needs an argument"}},
		{"a budget smaller than one body", []string{"run", "--max-inflight-bytes", "1000"}, exitcode.Usage, []string{"--max-inflight-bytes 1000 cannot hold one request"}},
		{"a negative budget", []string{"run", "--max-inflight-bytes", "-1"}, exitcode.Usage, []string{"--max-inflight-bytes -1: must not be negative"}},
		{"a negative body limit", []string{"run", "--max-body", "-5"}, exitcode.Usage, []string{"--max-body -5: must not be negative"}},
		{"the oplog in two places", []string{"run", "--oplog-dir", "x", "--oplog-nats", "nats://127.0.0.1:1"}, exitcode.Usage, []string{"--oplog-dir and --oplog-nats"}},
		{"nats credentials without nats", []string{"run", "--oplog-nats-creds", "c.creds"}, exitcode.Usage, []string{"--oplog-nats-creds needs --oplog-nats"}},
		{"a missing credentials file", []string{"run", "--oplog-nats", "nats://127.0.0.1:1", "--oplog-nats-creds", "/nonexistent/c.creds"}, exitcode.Usage, []string{"--oplog-nats-creds: stat /nonexistent/c.creds"}},
		{"an unknown sync mode", []string{"run", "--oplog-sync", "fast"}, exitcode.Usage, []string{`invalid value "fast" for flag -oplog-sync`, "not one of auto, filesystem, file, each-append"}},
		{"no deaths allowed", []string{"run", "--plugin-max-deaths", "0/1m"}, exitcode.Usage, []string{`invalid value "0/1m" for flag -plugin-max-deaths`, "N at least 1"}},
		{"deaths without a window", []string{"run", "--plugin-max-deaths", "5"}, exitcode.Usage, []string{`invalid value "5" for flag -plugin-max-deaths`}},
		{"a zero backoff", []string{"run", "--plugin-restart-backoff", "0s"}, exitcode.Usage, []string{`invalid value "0s" for flag -plugin-restart-backoff`}},
		{"unquarantine without a state dir", []string{"plugins", "unquarantine", "--state-dir", "", "p", "1.0.0"}, exitcode.Usage, []string{"no state directory"}},
		{"unquarantine of an unknown version", []string{"plugins", "unquarantine", "--state-dir", empty, "p", "1.0.0"}, exitcode.NoPlugin, []string{"p 1.0.0 has no record"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runner(t, tc.args...)
			assert.Equal(t, tc.code, code, "stdout:\n%s\nstderr:\n%s", out, errs)
			for _, s := range tc.contains {
				assert.Contains(t, out+errs, s)
			}
		})
	}
}
