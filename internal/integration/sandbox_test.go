package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/fixtures"
)

// sandboxGroups are the shipped unit's settings that are removed together
// in BenchmarkSandbox: one feature each.
var sandboxGroups = map[string][]string{
	"DynamicUser":      {"DynamicUser", "StateDirectory", "StateDirectoryMode", "RemoveIPC"},
	"SystemCallFilter": {"SystemCallFilter", "SystemCallErrorNumber", "SystemCallArchitectures"},
}

// sandboxSettings returns the [Service] settings of the shipped unit that
// shape the process's sandbox (all but how it is started, stopped and
// restarted), in their order, each as "Key=value".
func sandboxSettings(tb testing.TB) []string {
	f, err := os.Open(filepath.Join(fixtures.Root(), "deploy", "systemd", unit))
	require.NoError(tb, err)
	defer f.Close()
	lifecycle := map[string]bool{"Type": true, "NotifyAccess": true, "ExecStart": true, "ExecStopPost": true, "Restart": true,
		"RestartSec": true, "RestartForceExitStatus": true, "SuccessExitStatus": true, "RestartPreventExitStatus": true,
		"TimeoutStartSec": true, "TimeoutStopSec": true, "WatchdogSec": true}
	var out []string
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		key, _, ok := strings.Cut(line, "=")
		if section != "[Service]" || !ok || strings.HasPrefix(line, "#") || lifecycle[key] {
			continue
		}
		if key == "StateDirectory" {
			line = "StateDirectory=soplug-sandbox-bench"
		}
		out = append(out, line)
	}
	require.NoError(tb, sc.Err())
	require.Contains(tb, out, "ProtectSystem=strict", "the shipped unit's hardening is read")
	return out
}

// BenchmarkSandbox measures what the shipped unit's sandbox adds to a
// process's start under a real systemd: one op is `systemctl start` of a
// oneshot unit running /bin/true with the unit's sandbox settings ("all"),
// with none of them ("none"), or with all but one feature ("without=X").
// Every restart for a plugin change pays it between the new process's fork
// and its main:
//
//	go test ./internal/integration -run '^$' -bench Sandbox -benchtime 40x
func BenchmarkSandbox(b *testing.B) {
	if why := canBoot(); why != "" {
		b.Skip(why)
	}
	settings := sandboxSettings(b)
	work, err := os.MkdirTemp("/opt", "soplug-sandbox-")
	require.NoError(b, err)
	b.Cleanup(func() {
		for _, p := range []string{work, "/var/lib/private/soplug-sandbox-bench", "/var/lib/soplug-sandbox-bench"} {
			os.RemoveAll(p)
		}
	})
	units := filepath.Join(work, "units")
	require.NoError(b, os.MkdirAll(units, 0o755))
	type variant struct{ name, unit string }
	write := func(name string, keep func(key string) bool) variant {
		text := "[Service]\nType=oneshot\nExecStart=/bin/true\n"
		for _, s := range settings {
			if key, _, _ := strings.Cut(s, "="); keep(key) {
				text += s + "\n"
			}
		}
		v := variant{name, "sandbox-" + strings.ReplaceAll(name, "=", "-") + ".service"}
		require.NoError(b, os.WriteFile(filepath.Join(units, v.unit), []byte(text), 0o644))
		return v
	}
	variants := []variant{write("all", func(string) bool { return true }), write("none", func(string) bool { return false })}
	seen := map[string]bool{}
	for _, s := range settings {
		key, _, _ := strings.Cut(s, "=")
		group, members := key, []string{key}
		for g, ks := range sandboxGroups {
			if slices.Contains(ks, key) {
				group, members = g, ks
			}
		}
		if seen[group] {
			continue
		}
		seen[group] = true
		variants = append(variants, write("without="+group, func(k string) bool { return !slices.Contains(members, k) }))
	}
	sd := bootSystemd(b, units, filepath.Join(work, "sdns"))
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			for b.Loop() {
				// systemctl as sdns.sh's ctl runs it, without the script's
				// checks of the instance (made once, at boot) in the time.
				cmd := exec.Command("nsenter", "-t", strconv.Itoa(sd.pid), "-m", "-p", "-u", "-i", "-C", "--",
					"env", "-i", "PATH=/usr/bin:/bin", "systemctl", "--no-pager", "start", v.unit)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("systemctl start %s: %v\n%s", v.unit, err, out)
				}
			}
		})
	}
}
