package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/fixtures"
)

// The README's checked examples. A fenced block whose info string is
// "console" is a transcript: each line "$ COMMAND" is run by bash, and the
// lines after it, up to the next "$ " line or the end of the block, are
// what it must print (stdout and stderr together). Blocks of any other
// kind ("sh", "text", ...) are not run: they are recipes for another
// machine (systemd, /etc) or illustrations.
//
// Every transcript runs in a fresh temporary folder holding the bundled
// example plugins (plugins/, with its README.md and .gitignore),
// deploy/plugins.toml and testdata/wasm/. "go run -trimpath ./cmd/runner"
// and "runner" run the runner the tests build once with the README's
// flags. An HTML comment on the line before a block sets it up:
//
//	<!-- readme-test: daemon ARGS -->  runner ARGS serves in the folder meanwhile,
//	                                   on a free port that replaces 127.0.0.1:7420
//	<!-- readme-test: opt FOLDER -->    /opt/soplug/plugins is a folder of that
//	                                   name (see optFolders), outside the temp folder
//
// What must vary is masked on both sides before they are compared: times
// and durations, PIDs, hex digests, the Date header.

// transcript is one checked block of the README.
type transcript struct {
	line     int // of the opening fence, 1-based
	setup    []string
	commands []command
}

type command struct {
	line int
	text string
	want []string
}

var directiveRE = regexp.MustCompile(`^<!-- readme-test: (.*) -->$`)

// parseReadme returns the README's transcripts.
func parseReadme(text string) ([]transcript, error) {
	var out []transcript
	var cur *transcript
	prev := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && line == "```console":
			cur = &transcript{line: n}
			if m := directiveRE.FindStringSubmatch(prev); m != nil {
				cur.setup = strings.Fields(m[1])
			}
		case cur != nil && line == "```":
			if len(cur.commands) == 0 {
				return nil, fmt.Errorf("README.md:%d: a console block with no $ line", cur.line)
			}
			out = append(out, *cur)
			cur = nil
		case cur != nil && strings.HasPrefix(line, "$ "):
			cur.commands = append(cur.commands, command{line: n, text: line[2:]})
		case cur != nil:
			if len(cur.commands) == 0 {
				return nil, fmt.Errorf("README.md:%d: output before the first $ line", n)
			}
			c := &cur.commands[len(cur.commands)-1]
			c.want = append(c.want, line)
		}
		prev = line
	}
	if cur != nil {
		return nil, fmt.Errorf("README.md:%d: the console block is not closed", cur.line)
	}
	return out, sc.Err()
}

// masks replace, in order, what differs from one run to the next.
var masks = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`^Date: .*$`), "Date: <date>"},
	{regexp.MustCompile(`\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "<time>"},
	{regexp.MustCompile(`\b[0-9a-f]{12,}\b`), "<hex>"},
	{regexp.MustCompile(`\b\d+(\.\d+)?(ns|µs|us|ms|s|m|h)\b`), "<duration>"},
	{regexp.MustCompile(`\b(pid|PID)([ =])\d+`), "$1$2<pid>"},
	// Where a truncated copy's section table would end: the build's size.
	{regexp.MustCompile(`\bends at byte \d+`), "ends at byte <n>"},
}

func mask(line string) string {
	line = strings.TrimRight(line, " \t\r")
	for _, m := range masks {
		line = m.re.ReplaceAllString(line, m.with)
	}
	return line
}

// compare returns "" when got is what the README says, else the first
// difference, named by its README line.
func compare(c command, got []string) string {
	for len(got) > 0 && strings.TrimSpace(got[len(got)-1]) == "" {
		got = got[:len(got)-1]
	}
	for i := 0; i < max(len(c.want), len(got)); i++ {
		var w, g string
		if i < len(c.want) {
			w = mask(c.want[i])
		}
		if i < len(got) {
			g = mask(got[i])
		}
		if w != g || i >= len(c.want) || i >= len(got) {
			return fmt.Sprintf("README.md:%d: $ %s\nprinted line %d differs\n  README: %q\n  actual: %q\nwhole output:\n%s",
				c.line+1+i, c.text, i+1, w, g, strings.Join(got, "\n"))
		}
	}
	return ""
}

// optFolders are the folders a transcript can find at /opt/soplug/plugins:
// file name in the folder -> a bundled example ("plugins/...") or a fixture.
var optFolders = map[string]map[string]string{
	// The usual accidents: a plugin whose init segfaults, a copy cut short,
	// builds against another contract and another version of a shared
	// dependency, a copy still in progress.
	"accidents": {
		"wasmtag_v3.0.0.so":      "initsegv",
		"wasmtag_v2.2.0.so":      "truncated:plugins/wasmtag_v1.1.0.so",
		"wasmtag_v2.1.0.so":      "othercontract",
		"wasmtag_v2.0.0.so":      "otherdep",
		"wasmtag_v1.1.0.so":      "plugins/wasmtag_v1.1.0.so",
		"wasmtag_v1.0.0.so":      "plugins/wasmtag_v1.0.0.so",
		"wasmtag_v1.2.0.so.part": "plugins/wasmtag_v1.1.0.so",
	},
	// A deployed folder: three good versions, and a newer one built
	// against another version of a shared dependency.
	"deployed": {
		"wasmtag_v1.0.0.so": "plugins/wasmtag_v1.0.0.so",
		"wasmtag_v1.1.0.so": "plugins/wasmtag_v1.1.0.so",
		"wasmtag_v1.2.0.so": "good-1.2.0",
		"wasmtag_v9.0.0.so": "otherdep",
	},
}

// copyTree copies the files under src into dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	}))
}

// sandbox makes the folder a transcript runs in, and a bin folder with
// "runner" in it.
func sandbox(t *testing.T) (dir, bin string) {
	t.Helper()
	root := fixtures.Root()
	dir, bin = t.TempDir(), t.TempDir()
	copyTree(t, filepath.Join(root, "plugins"), filepath.Join(dir, "plugins"))
	copyTree(t, filepath.Join(root, "testdata", "wasm"), filepath.Join(dir, "testdata", "wasm"))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "deploy"), 0o755))
	data, err := os.ReadFile(filepath.Join(root, "deploy", "plugins.toml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "deploy", "plugins.toml"), data, 0o644))
	require.NoError(t, os.Symlink(binary(t), filepath.Join(bin, "runner")))
	return dir, bin
}

// optFolder makes the named folder of optFolders from dir's examples.
func optFolder(t *testing.T, dir, name string) string {
	t.Helper()
	files, ok := optFolders[name]
	require.True(t, ok, "no folder %q in optFolders", name)
	opt := filepath.Join(t.TempDir(), "plugins")
	require.NoError(t, os.Mkdir(opt, 0o755))
	for file, from := range files {
		var data []byte
		var err error
		switch {
		case strings.HasPrefix(from, "truncated:"):
			data, err = os.ReadFile(filepath.Join(dir, strings.TrimPrefix(from, "truncated:")))
			require.NoError(t, err)
			data = data[:1000000]
		case strings.HasPrefix(from, "plugins/"):
			data, err = os.ReadFile(filepath.Join(dir, from))
			require.NoError(t, err)
		default:
			data, err = os.ReadFile(fixtures.Path(t, from))
			require.NoError(t, err)
		}
		require.NoError(t, os.WriteFile(filepath.Join(opt, file), data, 0o755))
	}
	return opt
}

// runTranscript runs one transcript and returns its differences.
func runTranscript(t *testing.T, tr transcript) []string {
	t.Helper()
	dir, bin := sandbox(t)
	subst := []string{"go run -trimpath ./cmd/runner", "runner"}
	var outSubst []string
	for i := 0; i < len(tr.setup); {
		switch tr.setup[i] {
		case "opt":
			require.Greater(t, len(tr.setup), i+1, "README.md:%d: opt needs a folder name", tr.line-1)
			opt := optFolder(t, dir, tr.setup[i+1])
			subst = append(subst, "/opt/soplug/plugins", opt)
			outSubst = append(outSubst, opt, "/opt/soplug/plugins")
			i += 2
		case "daemon":
			args := append(tr.setup[i+1:], "--listen", "127.0.0.1:0")
			d := startIn(t, dir, args...)
			var addr string
			select {
			case addr = <-d.addr:
			case <-d.done:
				t.Fatalf("README.md:%d: the daemon exited:\n%s", tr.line-1, d.text())
			case <-time.After(time.Minute):
				t.Fatalf("README.md:%d: the daemon did not listen within a minute:\n%s", tr.line-1, d.text())
			}
			d.waitLog(t, `msg=ready`)
			subst = append(subst, "127.0.0.1:7420", addr)
			outSubst = append(outSubst, addr, "127.0.0.1:7420")
			i = len(tr.setup)
		default:
			t.Fatalf("README.md:%d: unknown readme-test directive %q", tr.line-1, tr.setup[i])
		}
	}
	cmdRepl := strings.NewReplacer(subst...)
	outRepl := strings.NewReplacer(append(outSubst, dir+"/", "")...)
	var diffs []string
	for _, c := range tr.commands {
		cmd := exec.Command("bash", "-c", cmdRepl.Replace(c.text))
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "SOPLUG_WASMTAG_V2=")
		out, _ := cmd.CombinedOutput()
		got := strings.Split(outRepl.Replace(string(out)), "\n")
		if d := compare(c, got); d != "" {
			diffs = append(diffs, d)
		}
	}
	return diffs
}

func readme(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixtures.Root(), "README.md"))
	require.NoError(t, err)
	return string(data)
}

// TestReadme runs every transcript of the README and compares what each
// command prints with what the README shows.
func TestReadme(t *testing.T) {
	trs, err := parseReadme(readme(t))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(trs), 5, "the README's checked examples")
	for _, tr := range trs {
		t.Run(fmt.Sprintf("line %d", tr.line), func(t *testing.T) {
			for _, d := range runTranscript(t, tr) {
				t.Error(d)
			}
		})
	}
}

// TestReadmeDrift: a transcript whose printed line no longer matches is
// caught, and named by its README line.
func TestReadmeDrift(t *testing.T) {
	trs, err := parseReadme(readme(t))
	require.NoError(t, err)
	var tr transcript
	for _, x := range trs {
		if len(x.setup) == 0 && len(x.commands[0].want) > 2 {
			tr = x
			break
		}
	}
	require.NotZero(t, tr.line, "a transcript with no set-up and some output")
	c := &tr.commands[0]
	c.want = append([]string(nil), c.want...)
	c.want[1] += " drifted"
	diffs := runTranscript(t, tr)
	require.Len(t, diffs, 1)
	assert.Contains(t, diffs[0], fmt.Sprintf("README.md:%d:", c.line+2))
	assert.Contains(t, diffs[0], "drifted")
}

func TestParseReadme(t *testing.T) {
	for _, tc := range []struct{ name, text, err string }{
		{"unclosed", "```console\n$ true\n", "README.md:1: the console block is not closed"},
		{"output first", "x\n```console\nhello\n$ true\n```\n", "README.md:3: output before the first $ line"},
		{"no command", "```console\n```\n", "README.md:1: a console block with no $ line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseReadme(tc.text)
			assert.EqualError(t, err, tc.err)
		})
	}
	trs, err := parseReadme("<!-- readme-test: opt deployed -->\n```console\n$ echo a\na\n$ echo b\nb\n```\n```sh\n$ not run\n```\n")
	require.NoError(t, err)
	require.Len(t, trs, 1)
	assert.Equal(t, []string{"opt", "deployed"}, trs[0].setup)
	assert.Equal(t, []command{{line: 3, text: "echo a", want: []string{"a"}}, {line: 5, text: "echo b", want: []string{"b"}}}, trs[0].commands)
}

func TestMask(t *testing.T) {
	for in, want := range map[string]string{
		"took 12.5ms, then 3s":             "took <duration>, then <duration>",
		"pid=4242 PID 17":                  "pid=<pid> PID <pid>",
		"sha256 0123456789abcdef0123 ok  ": "sha256 <hex> ok",
		"Date: Wed, 02 Dec 2026 20:42:33":  "Date: <date>",
		"at 2026-12-02T20:42:33.123Z":      "at <time>",
		"wasmtag 1.1.0 (transformer)":      "wasmtag 1.1.0 (transformer)",
	} {
		assert.Equal(t, want, mask(in), in)
	}
}

// TestReadmeExitStatuses: the README's table of exit statuses is the one
// internal/exitcode defines, with the Go runtime's 2 beside it.
func TestReadmeExitStatuses(t *testing.T) {
	text := readme(t)
	i := strings.Index(text, "| exit status | meaning |")
	require.GreaterOrEqual(t, i, 0, "the README's exit status table")
	table, _, _ := strings.Cut(text[i:], "\n\n")
	var got []string
	for _, m := range regexp.MustCompile(`(?m)^\| (\d+) \|`).FindAllStringSubmatch(table, -1) {
		got = append(got, m[1])
	}
	want := []string{}
	for _, c := range []int{exitcode.OK, exitcode.Failure, 2, exitcode.Usage, exitcode.NoInput, exitcode.InUse, exitcode.Restart, exitcode.Config} {
		want = append(want, fmt.Sprint(c))
	}
	assert.Equal(t, want, got)
}
