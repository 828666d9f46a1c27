package loader

import (
	"sync"
)

// Spare holds one probe child started ahead of need: its runtime and the
// program's package initialisation are done, and it waits for the path to
// probe on its standard input. A Prober with a Spare takes that child
// instead of starting one; the Spare is then empty until Fill starts the
// next, when its owner chooses (not in the middle of a change). Such a
// probe costs the plugin's open and calls, not a program's start (7 of the
// 10 ms of CPU a runner's probe child takes, spent while the daemon still
// serves and a drop waits). The verdict is the same: the child is the same
// program, and it opens one plugin and exits.
//
// A waiting child costs a process and its memory (25 MB resident for the
// runner). Close ends it; a child that died while waiting is replaced by
// one started for the probe. The zero Spare holds nothing until filled, a
// nil *Spare holds nothing, and a Spare is safe for concurrent use.
type Spare struct {
	mu     sync.Mutex
	child  *child
	closed bool
}

// Fill starts a waiting child for p, the Prober that will take it (its
// command, environment and timeout), if the Spare holds none, and reports
// a failure to start one (the probes then start their own).
func (s *Spare) Fill(p Prober) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.child != nil {
		return nil
	}
	p.Spare = nil
	c, err := p.start("")
	if err != nil {
		return err
	}
	s.child = c
	return nil
}

// Ready reports whether a child is waiting.
func (s *Spare) Ready() bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.child != nil && !s.child.exited()
}

// take returns the waiting child, or nil.
func (s *Spare) take() *child {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.child
	s.child = nil
	if c != nil && c.exited() {
		go c.reap()
		return nil
	}
	return c
}

// Close ends the waiting child, if any, and keeps the Spare from starting
// another.
func (s *Spare) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	c := s.child
	s.child, s.closed = nil, true
	s.mu.Unlock()
	if c != nil {
		c.kill()
		c.reap()
	}
	return nil
}

// exited reports whether a waiting child has ended: its report pipe closed
// before it was given a path.
func (c *child) exited() bool {
	select {
	case <-c.read:
		return true
	default:
		return false
	}
}

// reap collects a child that will not probe.
func (c *child) reap() {
	if c.stdin != nil {
		c.stdin.Close()
	}
	_ = c.cmd.Wait()
	c.rd.Close()
	<-c.read
}
