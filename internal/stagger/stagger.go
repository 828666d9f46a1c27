// Package stagger keeps runners that serve one socket from restarting at
// the same time, so that one of them always accepts its connections.
//
// Each runner of a group holds a shared flock(2) on ServingFile in the
// group's folder while it serves. A runner that is about to exit for a
// restart first takes an exclusive flock on RestartFile, which it keeps
// until it exits, so that restarts go one at a time; then it gives up its
// own shared lock and waits until another process holds one, that is,
// until another runner serves. A runner comes to count as serving only
// once it has served a while (ServeAfter), and it still counts while it
// waits for the restart lock, so that two runners that leave at once never
// wait for each other. The kernel releases every lock when its process
// dies, however it dies, so a killed runner never blocks the rest for
// longer than the wait's bound.
package stagger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// The lock files in a group's folder.
const (
	ServingFile = "serving.lock"
	RestartFile = "restart.lock"
)

// DefaultTimeout is how long Leave waits for another runner to serve
// when Join is given no timeout: longer than a peer's drain (the daemon's
// DefaultDrainTimeout, 10 s) and start together take.
const DefaultTimeout = 30 * time.Second

// pollEvery is how often Leave looks for a serving peer: a peer's start
// is tens of milliseconds, and a look is two system calls.
const pollEvery = 2 * time.Millisecond

// ErrUnusable is a group folder whose lock files cannot be made, opened or
// locked.
var ErrUnusable = errors.New("stagger: the group folder cannot be used")

// ErrNoPeer is a Leave that, within the timeout given to Join, could not
// take the restart lock or found no other runner serving: the caller goes
// on, and its socket waits for it.
var ErrNoPeer = errors.New("stagger: no other runner of the group serves")

// Group is one runner's membership of a group, made by Join. A nil
// *Group is a runner alone: its methods do nothing.
type Group struct {
	dir     string
	timeout time.Duration // Leave's bound on the wait for a serving peer

	mu      sync.Mutex
	serving *os.File // the shared lock, while this runner serves
	probe   *os.File // another description of ServingFile, to look for peers
	restart *os.File // held from Leave to the process's end
	later   *time.Timer
	done    bool // left or unserved: it serves no more
}

// Join opens the group's lock files in dir, creating both when missing.
// It takes no lock. timeout bounds Leave's wait for another runner to
// serve (DefaultTimeout when zero or less).
func Join(dir string, timeout time.Duration) (*Group, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	g := &Group{dir: dir, timeout: timeout}
	var err error
	if g.serving, err = open(dir, ServingFile); err != nil {
		return nil, err
	}
	if g.probe, err = open(dir, ServingFile); err != nil {
		g.serving.Close()
		return nil, err
	}
	if g.restart, err = open(dir, RestartFile); err != nil {
		g.serving.Close()
		g.probe.Close()
		return nil, err
	}
	return g, nil
}

// open opens (creating) the lock file name in dir.
func open(dir, name string) (*os.File, error) {
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o660)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnusable, path, err)
	}
	return f, nil
}

// Serve records that this runner serves: its peers may restart. A peer
// holds the lock exclusively only for the instant of a look; one stopped
// in that instant (SIGSTOP) makes Serve fail after the group's timeout
// instead of hanging. After Leave or Unserve it does nothing.
func (g *Group) Serve() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return nil
	}
	deadline := time.Now().Add(g.timeout)
	for {
		ok, err := try(g.serving, syscall.LOCK_SH)
		if ok || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s stayed locked by another process for %s", ErrUnusable, g.serving.Name(), g.timeout)
		}
		time.Sleep(pollEvery)
	}
}

// ServeAfter calls Serve d from now, unless Leave or Unserve comes first,
// and then done with its result: a runner counts as serving for the others
// of its group only once it has served for a while, so that a new set that
// crashes the process soon after its load takes down one runner, while
// the others go on serving the set before it.
func (g *Group) ServeAfter(d time.Duration, done func(error)) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return
	}
	g.later = time.AfterFunc(d, func() {
		err := g.Serve()
		g.mu.Lock()
		left := g.done
		g.mu.Unlock()
		if !left {
			done(err)
		}
	})
}

// Unserve records that this runner no longer serves (a stop), for good.
func (g *Group) Unserve() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done = true
	if g.later != nil {
		g.later.Stop()
	}
	syscall.Flock(int(g.serving.Fd()), syscall.LOCK_UN)
}

// Leave waits until this runner may exit for a restart: until no other
// runner of the group is restarting, then until another one serves. While
// it waits for the first it still serves (or comes to, by ServeAfter), so
// that two runners leaving at once cannot wait for each other; it gives
// serving up for good once the restart is its own. It returns how long it
// waited. The restart lock stays held until the
// process ends, so the next runner restarts only once this one is gone,
// and then only when this one's successor serves. With no other runner
// serving within the timeout given to Join, it returns ErrNoPeer, still holding the restart
// lock; when ctx ends first, ctx's error. Either way the caller exits.
func (g *Group) Leave(ctx context.Context) (time.Duration, error) {
	if g == nil {
		return 0, nil
	}
	start := time.Now()
	deadline := start.Add(g.timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	wait := func(why string) error {
		if time.Now().After(deadline) {
			return fmt.Errorf("%w within %s (%s): %s", ErrNoPeer, g.timeout, g.dir, why)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
			return nil
		}
	}
	for {
		ok, err := try(g.restart, syscall.LOCK_EX)
		if err != nil {
			return time.Since(start), err
		}
		if ok {
			break
		}
		if err := wait("another one has been restarting all that time"); err != nil {
			return time.Since(start), err
		}
	}
	g.Unserve()
	for {
		free, err := try(g.probe, syscall.LOCK_EX)
		if err != nil {
			return time.Since(start), err
		}
		if !free {
			return time.Since(start), nil // another runner holds it shared: it serves
		}
		syscall.Flock(int(g.probe.Fd()), syscall.LOCK_UN)
		if err := wait("none has served long enough to count"); err != nil {
			return time.Since(start), err
		}
	}
}

// try takes the lock how on f without blocking: false when another open
// file holds a lock that conflicts.
func try(f *os.File, how int) (bool, error) {
	err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		return false, nil
	}
	return false, fmt.Errorf("%w: locking %s: %w", ErrUnusable, f.Name(), err)
}

// Close gives up every lock of this runner's.
func (g *Group) Close() error {
	if g == nil {
		return nil
	}
	return errors.Join(g.serving.Close(), g.probe.Close(), g.restart.Close())
}
