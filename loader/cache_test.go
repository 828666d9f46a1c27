package loader_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/loader"
)

// logCount counts the log records by message.
type logCount struct {
	mu   sync.Mutex
	msgs map[string]int
	text bytes.Buffer
}

func (l *logCount) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCount) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs[r.Message]++
	l.text.WriteString(r.Level.String() + " " + r.Message + "\n")
	return nil
}
func (l *logCount) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCount) WithGroup(string) slog.Handler      { return l }

func (l *logCount) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.msgs[msg]
}

// verdicts is a selection's table: file → verdict, stage and reason.
func verdicts(sel *loader.Selection) map[string]string {
	out := map[string]string{}
	for _, c := range sel.Candidates {
		out[c.File] = string(c.Verdict) + " " + string(c.Stage) + " " + c.Reason + " " + string(c.Kind)
	}
	return out
}

// TestVerdictCache: a second selection, in a new process (a Cache opened
// again from its file), probes only what the cache cannot hold, and comes
// to the same table; a changed file, another runner build, a quarantine
// decision (Forget) and a corrupt or tampered cache file send candidates
// through the probe again.
func TestVerdictCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	install(t, dir, "good-1.0.0", "p_v1.0.0.so")
	install(t, dir, "noaccessor", "p_v1.1.0.so")
	install(t, dir, "badversion", "p_v1.2.0.so")
	install(t, dir, "notacceptable", "p_v1.3.0.so") // host-dependent: never cached
	write(t, dir, "p_v1.4.0.so", truncated(t))
	cachePath := filepath.Join(t.TempDir(), "verdicts.json")
	selectWith := func(runner string) (*loader.Selection, *logCount, *loader.Cache) {
		t.Helper()
		lc := &logCount{msgs: map[string]int{}}
		log := slog.New(lc)
		cache := loader.OpenCache(cachePath, runner, log)
		l := loader.New(loader.Config{Dir: dir, Cache: cache, Logger: log, Parallel: 1})
		sel, err := l.Check(context.Background())
		require.NoError(t, err)
		require.NoError(t, cache.Save())
		return sel, lc, cache
	}
	cold, lc, _ := selectWith("runner-A")
	assert.Equal(t, 5, lc.count("probing plugin candidate"), "cold: every candidate")
	require.Equal(t, "p_v1.0.0.so", cold.Selected()[0].File)

	warm, lc, cache := selectWith("runner-A")
	assert.Equal(t, 1, lc.count("probing plugin candidate"), "warm: only IsAcceptable() false is asked again:\n%s", lc.text.String())
	assert.Equal(t, int64(4), cache.Hits())
	assert.Equal(t, verdicts(cold), verdicts(warm), "the same table")

	// The same bytes, written anew: another file.
	data, err := os.ReadFile(filepath.Join(dir, "p_v1.1.0.so"))
	require.NoError(t, err)
	require.NoError(t, os.Remove(filepath.Join(dir, "p_v1.1.0.so")))
	write(t, dir, "p_v1.1.0.so", data)
	_, lc, _ = selectWith("runner-A")
	assert.Equal(t, 2, lc.count("probing plugin candidate"), "the rewritten file is checked again")

	// Another runner build trusts none of it.
	_, lc, _ = selectWith("runner-B")
	assert.Equal(t, 5, lc.count("probing plugin candidate"))

	// A quarantine decision about a version sends it through the probe.
	lc = &logCount{msgs: map[string]int{}}
	cache = loader.OpenCache(cachePath, "runner-B", slog.New(lc))
	cache.Forget("p", "1.0.0")
	require.NoError(t, cache.Save())
	_, lc, _ = selectWith("runner-B")
	assert.Equal(t, 2, lc.count("probing plugin candidate"))

	// A tampered verdict (its hash) and a corrupt file are not trusted.
	raw, err := os.ReadFile(cachePath)
	require.NoError(t, err)
	var f map[string]any
	require.NoError(t, json.Unmarshal(raw, &f))
	entries := f["entries"].(map[string]any)
	entries["p_v1.1.0.so"].(map[string]any)["hash"] = "0"
	entries["p_v1.2.0.so"].(map[string]any)["ok"] = true // a forged pass, but still the file's hash
	raw, _ = json.Marshal(f)
	require.NoError(t, os.WriteFile(cachePath, raw, 0o640))
	sel, lc, _ := selectWith("runner-B")
	assert.Equal(t, 5, lc.count("probing plugin candidate"), "a file edited by hand is not trusted at all")
	assert.Contains(t, lc.text.String(), "WARN verdict cache tampered with")
	assert.Equal(t, verdicts(cold), verdicts(sel), "the forged pass did not count")

	// Not JSON; and what Save (not synced) may leave after a machine's
	// crash: an empty file, or one cut short.
	for _, bad := range [][]byte{[]byte("{not json"), {}, raw[:len(raw)/2]} {
		require.NoError(t, os.WriteFile(cachePath, bad, 0o640))
		sel, lc, _ = selectWith("runner-B")
		assert.Equal(t, 5, lc.count("probing plugin candidate"), "%q", bad)
		assert.Contains(t, lc.text.String(), "WARN verdict cache corrupt; ignored")
		assert.Equal(t, verdicts(cold), verdicts(sel))
		assert.True(t, strings.HasPrefix(verdicts(sel)["p_v1.2.0.so"], "rejected"))
	}
}
