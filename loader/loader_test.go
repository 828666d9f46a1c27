package loader_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/loader"
	"github.com/soplug/soplug/loader/buildcheck"
)

// badFixtures are fixture plugins the probe must reject.
var badFixtures = []string{
	"othercontract", "otherdep", "noaccessor", "wrongtype", "variable", "bothkinds", "nilaccessor", "badversion",
	"notacceptable", "acceptpanic", "accepthang", "initpanic", "initexit", "initsegv", "initsleep", "initstop",
	"executable", "clib",
}

// TestNewestGoodBehindBadOnes stacks every kind of bad plugin above one
// good version and loads: the good one is selected and opened in this
// process, and every newer one is rejected.
func TestNewestGoodBehindBadOnes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	install(t, dir, "good-1.0.0", "p_v1.0.0.so")
	install(t, dir, "good-1.2.0", "p_v0.5.0.so") // older than the winner: never tried
	for i, name := range badFixtures {
		install(t, dir, name, fmt.Sprintf("p_v1.%d.0.so", i+1))
	}
	write(t, dir, "p_v3.0.0.so", truncated(t))

	sel, err := loader.New(loader.Config{Dir: dir, Prober: loader.Prober{Timeout: 5 * time.Second}}).Load(context.Background())
	require.NoError(t, err, "%s", table(sel))
	require.True(t, sel.Loaded)
	require.Len(t, sel.Candidates, len(badFixtures)+3)

	winners := sel.Selected()
	require.Len(t, winners, 1)
	w := winners[0]
	assert.Equal(t, "p_v1.0.0.so", w.File)
	tr, ok := w.Plugin.(contract.Transformer)
	require.True(t, ok, "the winner is loaded as a Transformer")
	assert.Equal(t, "1.0.0", tr.Version())
	out, err := tr.Transform(context.Background(), []byte("component"), nil)
	require.NoError(t, err)
	assert.Equal(t, "component", string(out))

	for i, c := range sel.Candidates {
		switch {
		case c.File == "p_v0.5.0.so":
			assert.Equal(t, loader.NotTried, c.Verdict)
		case c.File != w.File:
			assert.Equal(t, loader.Rejected, c.Verdict, c.File)
			assert.NotEmpty(t, c.Reason, c.File)
			assert.Less(t, i, 19, "rejected candidates come before the winner")
		}
	}
}

// table lists a selection's verdicts, for a failure's message.
func table(sel *loader.Selection) string {
	var b strings.Builder
	for _, c := range sel.Candidates {
		fmt.Fprintf(&b, "%s %s %s %s\n", c.File, c.Verdict, c.Stage, c.Reason)
	}
	return b.String()
}

// TestSameBuildUnderTwoNames: one build installed as two plugins cannot be
// loaded twice (Go's "plugin already loaded"): the second name falls back
// to its next version, and check says why. (Check only: Load runs the same
// preflight, and another test of this process loads good-1.0.0 itself.)
func TestSameBuildUnderTwoNames(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	install(t, dir, "good-1.0.0", "a_v1.0.0.so")
	install(t, dir, "good-1.0.0", "b_v1.0.0.so")
	install(t, dir, "good-1.1.0", "b_v0.9.0.so") // another build: its Version() disagrees
	install(t, dir, "good-1.2.0", "c_v1.2.0.so")
	sel, err := loader.New(loader.Config{Dir: dir}).Check(context.Background())
	require.ErrorIs(t, err, loader.ErrNoAcceptable, "b has nothing else")
	byFile := map[string]loader.Candidate{}
	for _, c := range sel.Candidates {
		byFile[c.File] = c
	}
	assert.Equal(t, loader.Selected, byFile["a_v1.0.0.so"].Verdict, "%s", table(sel))
	assert.Equal(t, loader.Selected, byFile["c_v1.2.0.so"].Verdict)
	b := byFile["b_v1.0.0.so"]
	assert.Equal(t, loader.Rejected, b.Verdict)
	assert.Equal(t, loader.StageCheck, b.Stage)
	assert.ErrorIs(t, b.Err, loader.ErrSameBuild)
	assert.Contains(t, b.Reason, "b_v1.0.0.so is the build of a_v1.0.0.so, selected for plugin a")
}

// TestLoadFallsBackWhenTheProcessRefuses: a plugin acceptable to the probe
// child but not in this process is rejected at the load stage and the next
// older version is loaded; loading the folder again in the same process
// refuses to reopen any file rather than hang.
func TestLoadFallsBackWhenTheProcessRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	install(t, dir, "flipflop", "p_v1.5.0.so")
	install(t, dir, "good-1.1.0", "p_v1.1.0.so")
	l := loader.New(loader.Config{Dir: dir, Prober: loader.Prober{Env: []string{"SOPLUG_FIXTURE_FLIPFLOP=1"}}})

	sel, err := l.Load(context.Background())
	require.NoError(t, err)
	require.Len(t, sel.Candidates, 2)
	flip, good := sel.Candidates[0], sel.Candidates[1]
	assert.Equal(t, loader.Rejected, flip.Verdict)
	assert.Equal(t, loader.StageLoad, flip.Stage)
	assert.ErrorIs(t, flip.Err, loader.ErrNotAcceptable)
	assert.Equal(t, loader.Selected, good.Verdict, good.Reason)
	require.NotNil(t, good.Plugin)
	assert.Equal(t, "1.1.0", good.Plugin.Version())

	done := make(chan struct{})
	go func() {
		defer close(done)
		sel, err = l.Load(context.Background())
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("a second Load of the same files hung")
	}
	assert.ErrorIs(t, err, loader.ErrNoAcceptable)
	for _, c := range sel.Candidates {
		assert.ErrorIs(t, c.Err, loader.ErrAlreadyOpened, c.File)
		assert.Equal(t, loader.StageLoad, c.Stage, c.File)
	}
}

// TestProbeSurvivesSIGBUS hands a truncated plugin straight to the probe,
// past the checks that would refuse it: dlopen faults in the child, and
// only the child dies.
func TestProbeSurvivesSIGBUS(t *testing.T) {
	t.Parallel()
	path := write(t, t.TempDir(), "p_v1.0.0.so", truncated(t))
	_, err := loader.Prober{}.Probe(context.Background(), path)
	require.Error(t, err)
	assert.ErrorIs(t, err, loader.ErrCrash)
	assert.Contains(t, err.Error(), "SIGBUS")
	assert.Contains(t, err.Error(), "while opening the plugin")
	t.Log(err)
}

func TestProbeBadCommand(t *testing.T) {
	t.Parallel()
	path := install(t, t.TempDir(), "good-1.0.0", "p_v1.0.0.so")
	_, err := loader.Prober{Command: []string{"/nonexistent/runner"}}.Probe(context.Background(), path)
	assert.ErrorIs(t, err, loader.ErrProbe)
	assert.Contains(t, err.Error(), "/nonexistent/runner")

	_, err = loader.Prober{Command: []string{"/bin/true"}}.Probe(context.Background(), path)
	assert.ErrorIs(t, err, loader.ErrCrash)
	assert.Contains(t, err.Error(), "status 0 without a verdict")
}

// TestExamples selects among the example plugins that build_plugins.sh
// put in plugins/: wasmtag 2.0.0 needs an opt-in this host lacks.
func TestExamples(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "plugins")
	fixture(t, "good-1.0.0") // build_plugins.sh has run
	verdicts := func(env ...string) map[string]loader.Candidate {
		sel, err := loader.New(loader.Config{Dir: dir, Prober: loader.Prober{Env: env}}).Check(context.Background())
		require.NoError(t, err)
		m := map[string]loader.Candidate{}
		for _, c := range sel.Candidates {
			m[c.File] = c
		}
		return m
	}
	v := verdicts("SOPLUG_WASMTAG_V2=")
	assert.Equal(t, loader.Rejected, v["wasmtag_v2.0.0.so"].Verdict)
	assert.ErrorIs(t, v["wasmtag_v2.0.0.so"].Err, loader.ErrNotAcceptable)
	assert.Equal(t, loader.Selected, v["wasmtag_v1.1.0.so"].Verdict)
	assert.Equal(t, loader.NotTried, v["wasmtag_v1.0.0.so"].Verdict)
	assert.Equal(t, loader.Selected, v["kindcount_v1.0.0.so"].Verdict)
	assert.Equal(t, contract.KindOplogProcessor, v["kindcount_v1.0.0.so"].Kind)
	assert.Equal(t, contract.KindTransformer, v["wasmtag_v1.1.0.so"].Kind)
	assert.ErrorIs(t, v["README.md"].Err, loader.ErrBadName)

	v = verdicts("SOPLUG_WASMTAG_V2=1")
	assert.Equal(t, loader.Selected, v["wasmtag_v2.0.0.so"].Verdict)
	assert.Equal(t, loader.NotTried, v["wasmtag_v1.1.0.so"].Verdict)
}

func TestNothingAcceptable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	install(t, dir, "notacceptable", "p_v9.0.0.so")
	install(t, dir, "good-1.0.0", "q_v1.0.0.so")
	sel, err := loader.New(loader.Config{Dir: dir}).Check(context.Background())
	require.Error(t, err)
	assert.ErrorIs(t, err, loader.ErrNoAcceptable)
	assert.Contains(t, err.Error(), "p (1 candidates in "+dir)
	assert.NotContains(t, err.Error(), "q (")
	require.Len(t, sel.Selected(), 1, "q is still selected")
	assert.Equal(t, "q", sel.Selected()[0].Name)
}

func TestNoCandidates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, dir, "README.md", []byte("not a plugin"))
	sel, err := loader.New(loader.Config{Dir: dir}).Check(context.Background())
	assert.ErrorIs(t, err, loader.ErrNoCandidates)
	require.Len(t, sel.Candidates, 1)
	assert.ErrorIs(t, sel.Candidates[0].Err, loader.ErrBadName)

	_, err = loader.New(loader.Config{Dir: filepath.Join(dir, "nope")}).Check(context.Background())
	assert.Error(t, err)
	assert.Contains(t, err.Error(), "nope")
}

// TestCanceled: the caller's cancellation ends the selection, and is not
// mistaken for a plugin's fault.
func TestCanceled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	install(t, dir, "initsleep", "p_v2.0.0.so")
	install(t, dir, "good-1.0.0", "p_v1.0.0.so")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	sel, err := loader.New(loader.Config{Dir: dir}).Check(ctx)
	assert.True(t, errors.Is(err, context.DeadlineExceeded), "%v", err)
	for _, c := range sel.Candidates {
		assert.NotEqual(t, loader.Rejected, c.Verdict, "%s: %s", c.File, c.Reason)
	}
}

// TestAdmitAndBeforeLoad: a candidate the policy refuses is rejected at the
// admit stage with the policy's reason, and BeforeLoad sees exactly the
// version about to be opened in this process.
func TestAdmitAndBeforeLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	install(t, dir, "good-2.0.0", "p_v2.0.0.so")
	install(t, dir, "good-1.2.0", "p_v1.2.0.so")
	errPolicy := errors.New("on the deny list")
	var loading []string
	l := loader.New(loader.Config{
		Dir: dir,
		Admit: func(c *loader.Candidate) error {
			if c.Version.String() == "2.0.0" {
				return errPolicy
			}
			return nil
		},
		BeforeLoad: func(c *loader.Candidate) error { loading = append(loading, c.File); return nil },
	})
	sel, err := l.Load(context.Background())
	require.NoError(t, err)
	require.Len(t, sel.Candidates, 2)
	denied := sel.Candidates[0]
	assert.Equal(t, loader.StageAdmit, denied.Stage)
	assert.ErrorIs(t, denied.Err, loader.ErrNotAdmitted)
	assert.ErrorIs(t, denied.Err, errPolicy)
	assert.Contains(t, denied.Reason, "on the deny list")
	assert.Equal(t, loader.Selected, sel.Candidates[1].Verdict)
	assert.Equal(t, []string{"p_v1.2.0.so"}, loading)
}

// TestProbeExplainsOpenFailure: when plugin.Open itself refuses a plugin
// for a package version (the check stage was bypassed), the reason says
// which module differs. (This test binary records no module versions; the
// runner's own do, see buildcheck's tests.)
func TestProbeExplainsOpenFailure(t *testing.T) {
	t.Parallel()
	path := install(t, t.TempDir(), "otherdep", "p_v9.0.0.so")
	_, err := loader.Prober{}.Probe(context.Background(), path)
	require.ErrorIs(t, err, loader.ErrOpen)
	assert.Contains(t, err.Error(), "plugin was built with a different version of package github.com/hashicorp/go-version")
	assert.Contains(t, err.Error(), "(github.com/hashicorp/go-version: plugin => github.com/hashicorp/go-version v1.7.0, runner (not recorded))")
}

// TestParallelProbesKeepTheOrder: probing older candidates several at a
// time gives the same table as one at a time.
func TestParallelProbesKeepTheOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	install(t, dir, "good-1.0.0", "p_v1.0.0.so")
	install(t, dir, "good-1.2.0", "p_v0.5.0.so")
	for i, name := range []string{"notacceptable", "noaccessor", "initpanic", "wrongtype", "initexit", "nilaccessor", "acceptpanic"} {
		install(t, dir, name, fmt.Sprintf("p_v1.%d.0.so", i+1))
	}
	table := func(parallel int) []string {
		sel, err := loader.New(loader.Config{Dir: dir, Parallel: parallel}).Check(context.Background())
		require.NoError(t, err)
		var rows []string
		for _, c := range sel.Candidates {
			rows = append(rows, fmt.Sprintf("%s %s %s %s %s", c.File, c.Verdict, c.Stage, c.Kind, c.Reason))
		}
		return rows
	}
	one := table(1)
	assert.Equal(t, one, table(4))
	assert.Contains(t, one[len(one)-1], "p_v0.5.0.so not tried", "older than the winner: not tried, even if probed alongside")
}

// TestWarm reads this executable's build ahead of a check, as a daemon
// does once it is ready: what the build check then compares plugins with.
func TestWarm(t *testing.T) {
	require.NoError(t, loader.Warm())
	self, err := buildcheck.Self()
	require.NoError(t, err)
	assert.NotEmpty(t, self.PkgHashes, "the package hashes a plugin's build is checked against")
}
