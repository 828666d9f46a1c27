package quarantine_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/quarantine"
)

// TestHelperProcess is a daemon run that loads a version and is then killed
// with SIGKILL: it is started by the tests below, not run on its own.
func TestHelperProcess(t *testing.T) {
	dir, file := os.Getenv("QUARANTINE_HELPER_DIR"), os.Getenv("QUARANTINE_HELPER_FILE")
	if dir == "" {
		return
	}
	s := &quarantine.Store{Dir: dir}
	if _, err := s.Begin(); err != nil {
		os.Exit(3)
	}
	if err := s.Loading("p", "2.0.0", file, ""); err != nil {
		os.Exit(4)
	}
	// With QUARANTINE_HELPER_CALLS, it loads more versions (name:version:file,
	// comma-separated) and dies in the middle of a call into each one listed
	// in QUARANTINE_HELPER_INFLIGHT, after a finished call into every one.
	for _, v := range strings.Split(os.Getenv("QUARANTINE_HELPER_CALLS"), ",") {
		if f := strings.Split(v, ":"); len(f) == 3 {
			if err := s.Loading(f[0], f[1], f[2], ""); err != nil {
				os.Exit(5)
			}
			s.Mark(f[0], f[1]).Enter()
			s.Mark(f[0], f[1]).Exit()
			if strings.Contains(","+os.Getenv("QUARANTINE_HELPER_INFLIGHT")+",", ","+f[0]+",") {
				s.Mark(f[0], f[1]).Enter()
			}
		}
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(time.Minute)
}

// crashRun runs the helper: a real process that loads p 2.0.0 and dies,
// with env (QUARANTINE_HELPER_CALLS, _INFLIGHT) besides.
func crashRun(t *testing.T, dir, file string, env ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(append(os.Environ(), "QUARANTINE_HELPER_DIR="+dir, "QUARANTINE_HELPER_FILE="+file), env...)
	err := cmd.Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal(), "the helper died by SIGKILL")
}

func plugin(t *testing.T, dir, file string) string {
	t.Helper()
	p := filepath.Join(dir, file)
	require.NoError(t, os.WriteFile(p, []byte(file), 0o644))
	return p
}

func TestQuarantineAfterTwoCrashes(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	file := plugin(t, plugins, "p_v2.0.0.so")
	s := &quarantine.Store{Dir: state}

	crashRun(t, state, file)
	end, err := s.Begin()
	require.NoError(t, err)
	require.Len(t, end.Blamed, 1)
	assert.Equal(t, 1, end.Blamed[0].Crashes)
	assert.Contains(t, end.Blamed[0].Evidence, "the only unproven version loaded, and the run ended before it settled")
	require.NoError(t, s.Admit("p", "2.0.0", file), "one crash does not quarantine")

	crashRun(t, state, file)
	_, err = s.Begin()
	require.NoError(t, err)
	err = s.Admit("p", "2.0.0", file)
	require.ErrorIs(t, err, quarantine.ErrQuarantined)
	assert.Contains(t, err.Error(), "after 2 crashes")
	assert.Contains(t, err.Error(), "runner plugins unquarantine p 2.0.0")

	recs, err := s.Records()
	require.NoError(t, err)
	require.Len(t, recs, 1)
	assert.True(t, recs[0].Quarantined(quarantine.DefaultThreshold))

	found, err := s.Lift("p", "2.0.0")
	require.NoError(t, err)
	assert.True(t, found)
	assert.NoError(t, s.Admit("p", "2.0.0", file))
}

// version is one plugin version a run loads: its name, version, file and
// plugin path.
type version struct{ name, ver, file, pkg string }

// load records that the current run of s loads each of vs, as the daemon
// does before it opens one.
func load(t *testing.T, s *quarantine.Store, vs ...version) {
	t.Helper()
	for _, v := range vs {
		require.NoError(t, s.Loading(v.name, v.ver, v.file, v.pkg))
	}
}

// begin ends the previous run of s, returning what Begin found of it, and
// starts one that loads vs.
func begin(t *testing.T, s *quarantine.Store, vs ...version) quarantine.End {
	t.Helper()
	end, err := s.Begin()
	require.NoError(t, err)
	load(t, s, vs...)
	return end
}

// TestLiftKeepsProven: unquarantine resets the crashes of a proven version
// that stacks blamed, and keeps it proven: at the next unclean end with no
// stack, beside a newcomer, the newcomer is blamed, not it.
func TestLiftKeepsProven(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	q := version{"q", "1.0.0", plugin(t, plugins, "q_v1.0.0.so"), "example.com/q/1.0.0"}
	p := version{"p", "2.0.0", plugin(t, plugins, "p_v2.0.0.so"), "example.com/p/2.0.0"}
	s := &quarantine.Store{Dir: state}
	begin(t, s, q)
	require.NoError(t, s.Clean())
	for range 2 { // q's code in the crash stack, twice
		begin(t, s, q)
		require.NoError(t, os.WriteFile(filepath.Join(state, quarantine.CrashFile), []byte(panicIn(q.pkg)), 0o600))
	}
	begin(t, s)
	require.ErrorIs(t, s.Admit("q", "1.0.0", q.file), quarantine.ErrQuarantined)
	found, err := s.Lift("q", "1.0.0")
	require.NoError(t, err)
	require.True(t, found)
	require.NoError(t, s.Admit("q", "1.0.0", q.file))

	require.NoError(t, os.WriteFile(filepath.Join(state, quarantine.CrashFile), nil, 0o600)) // the daemon empties it at each start
	load(t, s, q, p)
	end := begin(t, s) // killed, no stack
	require.Len(t, end.Blamed, 1)
	assert.Equal(t, "p", end.Blamed[0].Name, "q stayed proven through unquarantine")
}

func TestNewFileLiftsQuarantine(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	file := plugin(t, plugins, "p_v2.0.0.so")
	s := &quarantine.Store{Dir: state, Threshold: 1}
	crashRun(t, state, file)
	_, err := s.Begin()
	require.NoError(t, err)
	require.ErrorIs(t, s.Admit("p", "2.0.0", file), quarantine.ErrQuarantined)

	require.NoError(t, os.Remove(file))
	file = plugin(t, plugins, "p_v2.0.0.so") // a new copy: new inode and time
	assert.NoError(t, s.Admit("p", "2.0.0", file))
}

// TestProvenVersionsAreNotBlamed: a crash with no stack in a run that
// loaded a proven version and a new one blames only the new one; with only
// proven versions loaded (two SIGKILLs, the OOM killer's say) it blames
// none, and both kills leave them admitted.
func TestProvenVersionsAreNotBlamed(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	old, fresh := plugin(t, plugins, "q_v1.0.0.so"), plugin(t, plugins, "p_v2.0.0.so")
	q, p := version{"q", "1.0.0", old, ""}, version{"p", "2.0.0", fresh, ""}
	s := &quarantine.Store{Dir: state}

	begin(t, s, q)
	require.NoError(t, s.Clean())

	begin(t, s, q, p)
	end := begin(t, s) // the previous run never called Clean
	assert.True(t, end.Unclean)
	require.Len(t, end.Blamed, 1)
	assert.Equal(t, "p", end.Blamed[0].Name)

	load(t, s, q, p)
	require.NoError(t, s.Clean()) // a clean run proves p too
	for i := range 2 {
		begin(t, s, q, p)
		require.NoError(t, s.RecordStop(quarantine.Stop{Result: "oom-kill", ExitCode: "killed", ExitStatus: "KILL"}))
		end = begin(t, s)
		assert.True(t, end.Unclean, "kill %d", i)
		require.NotNil(t, end.Stop)
		assert.Equal(t, "oom-kill", end.Stop.Result)
		assert.Empty(t, end.Blamed, "kill %d: only proven versions were loaded", i)
		assert.NoFileExists(t, filepath.Join(state, quarantine.StopFile), "the account is read once")
	}
	assert.NoError(t, s.Admit("q", "1.0.0", old))
	assert.NoError(t, s.Admit("p", "2.0.0", fresh))
}

// panicIn is Go's crash output for a panic in a goroutine of the plugin
// whose plugin path is pkg, with a runner goroutine beside it.
func panicIn(pkg string) string {
	return "panic: boom\n\ngoroutine 39 [running]:\n" + pkg + ".Transformer.func1.1()\n\t" + pkg + "/main.go:16 +0x25\n" +
		"created by time.goFunc\n\ttime/sleep.go:215 +0x2d\n\n" +
		"goroutine 1 [select]:\ngithub.com/soplug/soplug/internal/daemon.Run()\n\tgithub.com/soplug/soplug/internal/daemon/daemon.go:200 +0x1\n"
}

// TestBlameByEvidence: which loaded versions an unclean end blames, from
// the crash output and systemd's account. b1 and b2 are unproven
// bystanders, n the newcomer, o a proven version.
func TestBlameByEvidence(t *testing.T) {
	const (
		n  = "example.com/plugins/n/3.0.0"
		b1 = "example.com/plugins/b1/1.0.0"
		o  = "example.com/plugins/o/1.0.0"
	)
	sigabrt := "SIGABRT: abort\nPC=0x4 m=0 sigcode=0\n\ngoroutine 0 gp=0x1 m=0 mp=0x2 [idle]:\nruntime.futex()\n\n" +
		"goroutine 7 [sleep]:\ntime.Sleep(0x3b9aca00)\n\truntime/time.go:1 +0x1\n" + b1 + ".ticker()\n\t" + b1 + "/main.go:9 +0x2\n\n" +
		"goroutine 51 [running]:\n" + n + ".tagger.Transform()\n\t" + n + "/main.go:30 +0x9\n" +
		"github.com/soplug/soplug/internal/transform.(*Service).call()\n\tgithub.com/soplug/soplug/internal/transform/transform.go:300 +0x1\n"
	for _, tc := range []struct {
		name    string
		loaded  []string // versions this run loaded: n, b1, b2, o
		crash   string
		stop    *quarantine.Stop
		settled bool
		blamed  []string
		why     string
	}{
		{"a newcomer's panic beside two bystanders", []string{"n", "b1", "b2", "o"}, panicIn(n), nil, true, []string{"n"}, "its code is in the crash stack: " + n + ".Transformer.func1.1()"},
		{"a proven version's own panic", []string{"o", "b1"}, panicIn(o), nil, true, []string{"o"}, o + ".Transformer.func1.1()"},
		{"the watchdog's SIGABRT during a call into n; b1 idles in its own code", []string{"n", "b1", "o"}, sigabrt, &quarantine.Stop{Result: "watchdog", ExitCode: "dumped", ExitStatus: "ABRT"}, true, []string{"n"}, n + ".tagger.Transform()"},
		{"the OOM killer, only proven versions", []string{"o"}, "", &quarantine.Stop{Result: "oom-kill", ExitCode: "killed", ExitStatus: "KILL"}, false, nil, ""},
		{"a stop that timed out, a lone newcomer in its first calls", []string{"n", "o"}, "", &quarantine.Stop{Result: "timeout", ExitCode: "killed", ExitStatus: "KILL"}, false, []string{"n"}, "the only unproven version loaded, and the run ended before it settled (during its load or first calls); no stack named a plugin; systemd: SERVICE_RESULT=timeout EXIT_CODE=killed EXIT_STATUS=KILL"},
		{"a lone newcomer, after the run settled", []string{"n", "o"}, "", nil, true, nil, ""},
		{"two newcomers, no stack", []string{"n", "b1", "o"}, "", nil, false, nil, ""},
		{"a crash in the runner's own code", []string{"n", "b1"}, "panic: runner\n\ngoroutine 1 [running]:\ngithub.com/soplug/soplug/internal/daemon.Run()\n", nil, true, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, plugins := t.TempDir(), t.TempDir()
			s := &quarantine.Store{Dir: state}
			paths := map[string]string{"n": n, "b1": b1, "b2": "example.com/plugins/b2/1.0.0", "o": o}
			files := map[string]string{}
			for k := range paths {
				files[k] = plugin(t, plugins, k+"_v1.0.0.so")
			}
			v := func(k string) version { return version{k, "1.0.0", files[k], paths[k]} }
			begin(t, s, v("o")) // o proven by a clean run
			require.NoError(t, s.Clean())

			begin(t, s)
			for _, k := range tc.loaded {
				load(t, s, v(k))
			}
			if tc.settled {
				require.NoError(t, s.Settle())
			}
			require.NoError(t, os.WriteFile(filepath.Join(state, quarantine.CrashFile), []byte(tc.crash), 0o600))
			if tc.stop != nil {
				require.NoError(t, s.RecordStop(*tc.stop))
			}
			before, err := os.ReadFile(filepath.Join(state, "quarantine.json"))
			require.NoError(t, err)

			// check's prediction first: the same blame, nothing written.
			ro := &quarantine.Store{Dir: state, ReadOnly: true}
			predicted, err := ro.Begin()
			require.NoError(t, err)
			after, err := os.ReadFile(filepath.Join(state, "quarantine.json"))
			require.NoError(t, err)
			assert.Equal(t, string(before), string(after), "a read-only Begin writes nothing")

			end, err := s.Begin()
			require.NoError(t, err)
			assert.True(t, end.Unclean)
			assert.Equal(t, tc.crash != "", end.Crash)
			names := func(rs []quarantine.Record) (out []string) {
				for _, r := range rs {
					out = append(out, r.Name+": "+r.Evidence)
				}
				return out
			}
			var got []string
			for _, r := range end.Blamed {
				got = append(got, r.Name)
				assert.Contains(t, r.Evidence, tc.why)
			}
			assert.Equal(t, tc.blamed, got)
			assert.Equal(t, names(end.Blamed), names(predicted.Blamed), "check predicts the start")
		})
	}
}

func TestCleanRunResetsCrashes(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	file := plugin(t, plugins, "p_v2.0.0.so")
	s := &quarantine.Store{Dir: state}
	crashRun(t, state, file)
	begin(t, s, version{"p", "2.0.0", file, ""})
	require.NoError(t, s.Clean())
	crashRun(t, state, file)
	begin(t, s)
	assert.NoError(t, s.Admit("p", "2.0.0", file), "the crashes were not in a row")
}

// TestBeginAfterACleanEnd: a start after a clean end writes nothing (the
// state file is the same file, unchanged: no replace, no sync on the way
// to ready); a kill before its first Loading blames nothing; the run's
// record begins with Loading.
func TestBeginAfterACleanEnd(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	file := plugin(t, plugins, "p_v2.0.0.so")
	s := &quarantine.Store{Dir: state}
	begin(t, s, version{"p", "2.0.0", file, ""})
	require.NoError(t, s.Clean())
	path := filepath.Join(state, "quarantine.json")
	before, err := os.Stat(path)
	require.NoError(t, err)
	data, err := os.ReadFile(path)
	require.NoError(t, err)

	end := begin(t, s)
	assert.False(t, end.Unclean)
	after, err := os.Stat(path)
	require.NoError(t, err)
	assert.True(t, os.SameFile(before, after) && before.ModTime().Equal(after.ModTime()), "Begin replaced the state file")
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, string(data), string(got))

	// Killed before it loaded anything: nothing to blame, nothing kept.
	end = begin(t, s)
	assert.False(t, end.Unclean)
	assert.Empty(t, end.Blamed)
	// The record begins with Loading, and a kill after it is unclean.
	begin(t, s, version{"p", "2.0.0", file, ""})
	end = begin(t, s)
	assert.True(t, end.Unclean, "a run that loaded a version and did not end cleanly")
}

// TestRecordStopAsRoot: the unit runs stop-post as root ("+") in a state
// directory the service's user owns: the record is that user's, so the
// next run reads and removes it, and a symlink the service planted is
// replaced, not written through. Root creates no missing folder.
func TestRecordStopAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, as systemd runs ExecStopPost=+")
	}
	const uid, gid = 64787, 64787
	state, outside := t.TempDir(), t.TempDir()
	require.NoError(t, os.Chown(state, uid, gid))
	victim := filepath.Join(outside, "shadow")
	require.NoError(t, os.WriteFile(victim, []byte("root's"), 0o600))
	require.NoError(t, os.Symlink(victim, filepath.Join(state, quarantine.StopFile)))
	require.NoError(t, os.Symlink(victim, filepath.Join(state, quarantine.StopFile+".tmp")))

	s := &quarantine.Store{Dir: state}
	require.NoError(t, s.RecordStop(quarantine.Stop{Result: "oom-kill", ExitCode: "killed", ExitStatus: "KILL"}))
	fi, err := os.Lstat(filepath.Join(state, quarantine.StopFile))
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular())
	st := fi.Sys().(*syscall.Stat_t)
	assert.Equal(t, [2]uint32{uid, gid}, [2]uint32{st.Uid, st.Gid}, "the record is the state directory owner's")
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	data, err := os.ReadFile(victim)
	require.NoError(t, err)
	assert.Equal(t, "root's", string(data))

	end, err := s.Begin()
	require.NoError(t, err)
	require.NotNil(t, end.Stop)
	assert.Equal(t, "oom-kill", end.Stop.Result)

	missing := filepath.Join(t.TempDir(), "state")
	err = (&quarantine.Store{Dir: missing}).RecordStop(quarantine.Stop{Result: "success"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), missing)
	assert.NoDirExists(t, missing, "root made no folder its service could not write to")
}

func TestDisabledStoreIsANoOp(t *testing.T) {
	for _, s := range []*quarantine.Store{nil, {}} {
		end, err := s.Begin()
		assert.NoError(t, err)
		assert.Empty(t, end.Blamed)
		assert.NoError(t, s.Loading("p", "1.0.0", "/nonexistent", ""))
		assert.NoError(t, s.Settle())
		assert.NoError(t, s.RecordStop(quarantine.Stop{Result: "success"}))
		assert.NoError(t, s.Admit("p", "1.0.0", "/nonexistent"))
		assert.NoError(t, s.Clean())
	}
}

func TestCorruptStateFile(t *testing.T) {
	state := t.TempDir()
	path := filepath.Join(state, "quarantine.json")
	require.NoError(t, os.WriteFile(path, []byte("{not json"), 0o600))
	_, err := (&quarantine.Store{Dir: state}).Begin()
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "not valid JSON")
	data, _ := os.ReadFile(path)
	assert.Equal(t, "{not json", string(data), "the bad file is left for the operator")
}

// TestCallsInFlightAtAKill: a real process loads p, a and b (all unproven)
// and q (proven), and dies by SIGKILL in the middle of calls into a and q:
// the counts in its mapped MarksFile survive it, and the next start blames
// a, whose call was in flight, and neither the bystanders nor q, which is
// proven (an OOM kill in a proven version's call blames nothing). With no
// call in flight, two unproven versions and no stack blame nothing.
func TestCallsInFlightAtAKill(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	p := plugin(t, plugins, "p_v2.0.0.so")
	files := map[string]string{}
	for _, n := range []string{"a", "b", "q"} {
		files[n] = plugin(t, plugins, n+"_v1.0.0.so")
	}
	s := &quarantine.Store{Dir: state}
	begin(t, s, version{"q", "1.0.0", files["q"], ""})
	require.NoError(t, s.Clean()) // q is proven

	calls := "QUARANTINE_HELPER_CALLS=a:1.0.0:" + files["a"] + ",b:1.0.0:" + files["b"] + ",q:1.0.0:" + files["q"]
	for _, tc := range []struct {
		name, inflight string
		blamed         []string
	}{
		{"calls into a and q in flight", "a,q", []string{"a"}},
		{"no call in flight", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			crashRun(t, state, p, calls, "QUARANTINE_HELPER_INFLIGHT="+tc.inflight)
			end, err := s.Begin()
			require.NoError(t, err)
			assert.True(t, end.Unclean)
			var blamed []string
			for _, r := range end.Blamed {
				blamed = append(blamed, r.Name)
				assert.Equal(t, "a call into it was in flight when the run ended (1 in flight); no stack named a plugin", r.Evidence)
			}
			assert.Equal(t, tc.blamed, blamed)
			require.NoError(t, s.Clean())
		})
	}
}

// BenchmarkMark is the cost a call pays for being counted in flight: an
// Enter and an Exit on the mapped count, from one goroutine and from
// GOMAXPROCS at once (one count: the worst case, every call into one
// version).
func BenchmarkMark(b *testing.B) {
	state, plugins := b.TempDir(), b.TempDir()
	file := filepath.Join(plugins, "p_v1.0.0.so")
	require.NoError(b, os.WriteFile(file, []byte("p"), 0o644))
	s := &quarantine.Store{Dir: state}
	_, err := s.Begin()
	require.NoError(b, err)
	require.NoError(b, s.Loading("p", "1.0.0", file, ""))
	m := s.Mark("p", "1.0.0")
	require.NotNil(b, m)
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			m.Enter()
			m.Exit()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Enter()
				m.Exit()
			}
		})
	})
}

// stateFileOf returns the identity and content of the records' file.
func stateFileOf(t *testing.T, state string) (os.FileInfo, string) {
	t.Helper()
	path := filepath.Join(state, "quarantine.json")
	fi, err := os.Stat(path)
	require.NoError(t, err)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return fi, string(data)
}

// TestRestartWritesNoRecords: a restart onto versions the store has
// proven changes no record: neither the old run's Clean nor the new
// run's Begin and Loadings replace the records' file (no durable write,
// so no sync, on a restart's path); the run's own record is run.json,
// written and removed. A version loaded for the first time is recorded
// when its run ends: proven at a clean end, blamed after a crash.
func TestRestartWritesNoRecords(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	p := version{"p", "1.0.0", plugin(t, plugins, "p_v1.0.0.so"), "example.com/p/1.0.0"}
	q := version{"q", "1.0.0", plugin(t, plugins, "q_v1.0.0.so"), "example.com/q/1.0.0"}
	s := &quarantine.Store{Dir: state}
	begin(t, s, p, q)
	require.NoError(t, s.Clean()) // both proven: the records' file is written
	before, data := stateFileOf(t, state)

	for range 3 { // restarts
		begin(t, s, p, q)
		assert.FileExists(t, filepath.Join(state, "run.json"), "the run's record")
		require.NoError(t, s.Settle())
		require.NoError(t, s.Clean())
		assert.NoFileExists(t, filepath.Join(state, "run.json"), "removed at a clean end")
	}
	after, got := stateFileOf(t, state)
	assert.True(t, os.SameFile(before, after), "the records' file was replaced on a restart")
	assert.Equal(t, data, got)

	// A version whose file was replaced is admitted, and its stale record
	// left as it is, with nothing written.
	require.NoError(t, os.WriteFile(q.file, []byte("q, rebuilt"), 0o644))
	require.NoError(t, s.Admit(q.name, q.ver, q.file))
	after, _ = stateFileOf(t, state)
	assert.True(t, os.SameFile(before, after), "Admit wrote the records' file")

	// A newcomer: nothing of it is written while it loads, and its clean
	// end proves it.
	r := version{"r", "1.0.0", plugin(t, plugins, "r_v1.0.0.so"), "example.com/r/1.0.0"}
	begin(t, s, p, q, r)
	after, _ = stateFileOf(t, state)
	assert.True(t, os.SameFile(before, after), "Loading a newcomer wrote its record")
	require.NoError(t, s.Clean())
	recs, err := s.Records()
	require.NoError(t, err)
	require.Len(t, recs, 3)
	assert.True(t, recs[2].Proven, "r proven at its run's clean end")

	// A newcomer whose run is killed is blamed, with a record made then.
	file := plugin(t, plugins, "p_v2.0.0.so")
	crashRun(t, state, file)
	end := begin(t, s)
	require.Len(t, end.Blamed, 1)
	assert.Equal(t, "2.0.0", end.Blamed[0].Version)
	assert.Equal(t, 1, end.Blamed[0].Crashes)
}

// TestRunRecordCutShort: a run.json a power loss cut short (not JSON) is
// ignored, saying so, and blames nothing; a start after it goes on, with
// the records as they were.
func TestRunRecordCutShort(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	p := version{"p", "1.0.0", plugin(t, plugins, "p_v1.0.0.so"), ""}
	s := &quarantine.Store{Dir: state}
	begin(t, s, p)
	require.NoError(t, s.Clean())
	for _, torn := range []string{"", "{\"pid\": 12", "\x00\x00\x00\x00"} {
		require.NoError(t, os.WriteFile(filepath.Join(state, "run.json"), []byte(torn), 0o600))
		end := begin(t, s, p)
		assert.False(t, end.Unclean, "%q", torn)
		assert.Empty(t, end.Blamed)
		assert.Contains(t, end.Unreadable, "run.json is not valid JSON", "%q", torn)
		require.NoError(t, s.Clean())
		end = begin(t, s)
		assert.Empty(t, end.Unreadable, "the next start reads a whole record")
	}
	recs, err := s.Records()
	require.NoError(t, err)
	require.Len(t, recs, 1)
	assert.True(t, recs[0].Proven)
	assert.Zero(t, recs[0].Crashes)
}

// TestUncleanEndCountedOnce: when a power loss undoes Begin's removal of
// the run's record after it blamed that run, the next Begin finds the
// same run again and does not count it twice.
func TestUncleanEndCountedOnce(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	file := plugin(t, plugins, "p_v2.0.0.so")
	s := &quarantine.Store{Dir: state}
	crashRun(t, state, file)
	kept, err := os.ReadFile(filepath.Join(state, "run.json"))
	require.NoError(t, err, "the killed run's record")
	end := begin(t, s)
	require.Len(t, end.Blamed, 1)
	require.NoError(t, os.WriteFile(filepath.Join(state, "run.json"), kept, 0o600)) // the removal undone
	end = begin(t, s)
	assert.False(t, end.Unclean, "already counted")
	assert.Empty(t, end.Blamed)
	require.NoError(t, s.Admit("p", "2.0.0", file), "one crash, not two")
}

// TestRunRecordInTheStateFile: a state file written before the run's
// record had a file of its own holds it under "run" (its versions
// recorded at Loading): Begin blames that run by the same evidence, and
// the record leaves the state file.
func TestRunRecordInTheStateFile(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	file := plugin(t, plugins, "p_v2.0.0.so")
	id, err := quarantine.FileID(file)
	require.NoError(t, err)
	old := `{
  "run": {"pid": 4242, "started": "2026-12-01T10:00:00Z", "loaded": ["p@2.0.0"]},
  "versions": {"p@2.0.0": {"name": "p", "version": "2.0.0", "file": "` + id + `", "crashes": 1}}
}`
	require.NoError(t, os.WriteFile(filepath.Join(state, "quarantine.json"), []byte(old), 0o600))
	s := &quarantine.Store{Dir: state}
	end := begin(t, s)
	assert.True(t, end.Unclean)
	require.Len(t, end.Blamed, 1)
	assert.Equal(t, 2, end.Blamed[0].Crashes)
	assert.ErrorIs(t, s.Admit("p", "2.0.0", file), quarantine.ErrQuarantined)
	_, data := stateFileOf(t, state)
	assert.NotContains(t, data, `"run"`)
	end = begin(t, s)
	assert.False(t, end.Unclean, "counted once")

	// A run of a proven version, which nothing blames, leaves the state
	// file too: it is not found again at every start.
	old = `{
  "run": {"pid": 4243, "started": "2026-12-01T11:00:00Z", "loaded": ["p@2.0.0"]},
  "versions": {"p@2.0.0": {"name": "p", "version": "2.0.0", "file": "` + id + `", "crashes": 0, "proven": true}}
}`
	require.NoError(t, os.WriteFile(filepath.Join(state, "quarantine.json"), []byte(old), 0o600))
	end = begin(t, s)
	assert.True(t, end.Unclean)
	assert.Empty(t, end.Blamed, "a proven version, no stack")
	end = begin(t, s)
	assert.False(t, end.Unclean, "the old run's record was moved out")
}
