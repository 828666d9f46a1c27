package stagger_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/stagger"
)

// TestHelperProcess is a runner of the group in $STAGGER_DIR: it serves,
// or with STAGGER_LEAVE=1 leaves, says "ok" on stdout, and waits to be
// killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("STAGGER_DIR")
	if dir == "" {
		t.Skip("a helper process")
	}
	g, err := stagger.Join(dir, time.Minute)
	if err == nil {
		err = g.Serve()
	}
	if err == nil && os.Getenv("STAGGER_LEAVE") == "1" {
		_, err = g.Leave(context.Background())
	}
	if err != nil {
		os.Stdout.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString("ok\n")
	select {}
}

// runner starts a helper process in dir and waits for its "ok".
func runner(t *testing.T, dir string, leave bool) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "STAGGER_DIR="+dir)
	if leave {
		cmd.Env = append(cmd.Env, "STAGGER_LEAVE=1")
	}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ok\n", line)
	return cmd
}

func join(t *testing.T, dir string, timeout time.Duration) *stagger.Group {
	t.Helper()
	g, err := stagger.Join(dir, timeout)
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	return g
}

// leave runs g.Leave in the background; its result arrives on the channel.
func leave(ctx context.Context, g *stagger.Group) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := g.Leave(ctx)
		done <- err
	}()
	return done
}

// notYet asserts that nothing arrives on done for a while: what a Leave
// that must wait does. (A correct Leave never returns here, so a busy
// machine cannot make this fail; only a wrong one can.)
func notYet(t *testing.T, done <-chan error, why string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("Leave returned (%v) %s", err, why)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestLeave(t *testing.T) {
	for _, tc := range []struct {
		name string
		peer func(t *testing.T, dir string) // before the Leave
		late func(t *testing.T, dir string) // while it waits
		want error
	}{
		{name: "alone: no peer within the timeout", want: stagger.ErrNoPeer},
		{name: "a peer that serves", peer: func(t *testing.T, dir string) { require.NoError(t, join(t, dir, 0).Serve()) }},
		{name: "a peer process that serves", peer: func(t *testing.T, dir string) { runner(t, dir, false) }},
		{name: "a peer that joined and does not serve", peer: func(t *testing.T, dir string) { join(t, dir, 0) }, want: stagger.ErrNoPeer},
		{
			name: "a peer killed while serving",
			peer: func(t *testing.T, dir string) {
				cmd := runner(t, dir, false)
				require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
				cmd.Wait()
			},
			want: stagger.ErrNoPeer,
		},
		{name: "a peer that comes to serve while it waits", late: func(t *testing.T, dir string) { require.NoError(t, join(t, dir, 0).Serve()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			timeout := 300 * time.Millisecond
			if tc.late != nil {
				timeout = time.Minute
			}
			g := join(t, dir, timeout)
			require.NoError(t, g.Serve())
			if tc.peer != nil {
				tc.peer(t, dir)
			}
			done := leave(context.Background(), g)
			if tc.late != nil {
				notYet(t, done, "before a peer served")
				tc.late(t, dir)
			}
			err := <-done
			if tc.want == nil {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, tc.want)
				assert.Contains(t, err.Error(), dir)
			}
		})
	}
}

// Two runners that decide to restart at once go one after the other: the
// second waits for the first to exit, then for its successor to serve.
func TestRestartsGoOneAtATime(t *testing.T) {
	dir := t.TempDir()
	a, b := join(t, dir, time.Minute), join(t, dir, time.Minute)
	require.NoError(t, a.Serve())
	require.NoError(t, b.Serve())
	_, err := a.Leave(context.Background())
	require.NoError(t, err, "b serves")
	done := leave(context.Background(), b)
	notYet(t, done, "while a restarts")
	require.NoError(t, a.Close()) // a's process ends
	notYet(t, done, "before a's successor serves")
	a2 := join(t, dir, time.Minute)
	require.NoError(t, a2.Serve())
	assert.NoError(t, <-done)
}

// Two runners that leave at the same instant never both give up serving
// and wait for each other: one goes, the other waits for its successor.
func TestTwoLeaveAtOnce(t *testing.T) {
	for i := range 50 {
		dir := t.TempDir()
		gs := []*stagger.Group{join(t, dir, time.Minute), join(t, dir, time.Minute)}
		for _, g := range gs {
			require.NoError(t, g.Serve())
		}
		type result struct {
			who int
			err error
		}
		done := make(chan result, 2)
		start := make(chan struct{})
		for who, g := range gs {
			go func() {
				<-start
				_, err := g.Leave(context.Background())
				done <- result{who, err}
			}()
		}
		close(start)
		first := <-done
		require.NoError(t, first.err, "round %d", i)
		select {
		case r := <-done:
			t.Fatalf("round %d: both left (%v)", i, r.err)
		default:
		}
		require.NoError(t, gs[first.who].Close())
		require.NoError(t, join(t, dir, 0).Serve()) // its successor
		second := <-done
		assert.NoError(t, second.err, "round %d", i)
		assert.NotEqual(t, first.who, second.who)
	}
}

// Two runners that have not served long enough to count (ServeAfter) and
// leave at once: the one that waits for the restart lock still comes to
// serve, so the one that holds it goes.
func TestTwoNewRunnersLeaveAtOnce(t *testing.T) {
	dir := t.TempDir()
	a, b := join(t, dir, time.Minute), join(t, dir, time.Minute)
	counted := make(chan string, 2)
	a.ServeAfter(200*time.Millisecond, func(err error) { assert.NoError(t, err); counted <- "a" })
	b.ServeAfter(200*time.Millisecond, func(err error) { assert.NoError(t, err); counted <- "b" })
	da, db := leave(context.Background(), a), leave(context.Background(), b)
	var first *stagger.Group
	var rest <-chan error
	select {
	case err := <-da:
		require.NoError(t, err)
		first, rest = a, db
	case err := <-db:
		require.NoError(t, err)
		first, rest = b, da
	case <-time.After(30 * time.Second):
		t.Fatal("neither left: each waited for the other")
	}
	assert.Len(t, counted, 1, "only the one that waited for the restart lock came to count")
	notYet(t, rest, "before the first one's successor serves")
	require.NoError(t, first.Close())
	require.NoError(t, join(t, dir, 0).Serve())
	assert.NoError(t, <-rest)
}

// A Serve due after Leave took the restart lock, or after Unserve, does
// not happen: a leaving runner never counts itself as the one that serves.
func TestNoServeAfterLeaving(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(g *stagger.Group)
	}{
		{"leave", func(g *stagger.Group) { leave(context.Background(), g) }},
		{"unserve", func(g *stagger.Group) { g.Unserve() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			g := join(t, dir, time.Minute)
			g.ServeAfter(100*time.Millisecond, func(error) { t.Error("served after it stopped serving") })
			tc.stop(g)
			time.Sleep(300 * time.Millisecond)
			_, err := join(t, dir, 200*time.Millisecond).Leave(context.Background())
			require.ErrorIs(t, err, stagger.ErrNoPeer)
			if tc.name == "leave" {
				assert.Contains(t, err.Error(), "another one has been restarting all that time", "g holds the restart lock")
			} else {
				assert.Contains(t, err.Error(), "none has served long enough to count")
			}
		})
	}
}

func TestARunnerKilledWhileLeavingFreesTheRestart(t *testing.T) {
	dir := t.TempDir()
	g := join(t, dir, time.Minute)
	require.NoError(t, g.Serve())
	cmd := runner(t, dir, true) // it serves, then leaves: g serves
	done := leave(context.Background(), g)
	notYet(t, done, "while the helper holds the restart lock")
	require.NoError(t, join(t, dir, 0).Serve()) // a third serves
	notYet(t, done, "while the helper holds the restart lock")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	cmd.Wait()
	assert.NoError(t, <-done)
}

func TestLeaveEndsWithItsContext(t *testing.T) {
	dir := t.TempDir()
	g := join(t, dir, time.Minute)
	require.NoError(t, g.Serve())
	ctx, cancel := context.WithCancelCause(context.Background())
	done := leave(ctx, g)
	notYet(t, done, "before the context ended")
	stop := errors.New("SIGTERM")
	cancel(stop)
	select {
	case err := <-done:
		assert.ErrorIs(t, err, stop)
	case <-time.After(10 * time.Second):
		t.Fatal("Leave did not end with its context")
	}
}

func TestJoinNamesTheFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	ro := t.TempDir()
	require.NoError(t, os.Chmod(ro, 0o500))
	t.Cleanup(func() { os.Chmod(ro, 0o700) })
	for _, tc := range []struct{ name, dir, want string }{
		{"missing", filepath.Join(t.TempDir(), "missing"), "no such file or directory"},
		{"a file", file, "not a directory"},
		{"read-only", ro, "permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "read-only" && os.Geteuid() == 0 {
				t.Skip("root writes a read-only folder")
			}
			_, err := stagger.Join(tc.dir, 0)
			require.ErrorIs(t, err, stagger.ErrUnusable)
			assert.Contains(t, err.Error(), filepath.Join(tc.dir, stagger.ServingFile))
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// A process that holds the serving lock exclusively (a peer stopped in
// the instant of its look) makes Serve fail after the timeout, not hang.
func TestServeDoesNotHang(t *testing.T) {
	dir := t.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, stagger.ServingFile), os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_EX))
	g := join(t, dir, 100*time.Millisecond)
	err = g.Serve()
	require.ErrorIs(t, err, stagger.ErrUnusable)
	assert.Contains(t, err.Error(), "stayed locked by another process for 100ms")
	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_UN))
	assert.NoError(t, g.Serve())
}

func TestNilGroupIsAlone(t *testing.T) {
	var g *stagger.Group
	assert.NoError(t, g.Serve())
	g.Unserve()
	waited, err := g.Leave(context.Background())
	assert.NoError(t, err)
	assert.Zero(t, waited)
	assert.NoError(t, g.Close())
}
