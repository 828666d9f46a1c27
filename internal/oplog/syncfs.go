package oplog

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// fsSync is what a FileJournal's writers share to make their appends
// durable: one syncfs(2) of the oplog folder's file system covers every
// append written before it began, to any worker, so that the appends that
// arrive while one runs share the next (group commit across workers).
type fsSync struct {
	mu     sync.Mutex
	cond   sync.Cond
	busy   bool
	next   *syncRound // the round appends written now wait for
	rounds int64      // syncfs calls made
	// fault, in tests, runs in each round in place of syncfs when set.
	fault func() error
}

// syncRound is one syncfs and the appends it covers.
type syncRound struct {
	started, finished bool
	err               error
}

func newFSSync() *fsSync {
	s := &fsSync{}
	s.cond.L = &s.mu
	return s
}

// sync returns once a syncfs that began after the call has ended, with
// its result; f is a file on the file system.
func (s *fsSync) sync(f *os.File) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == nil {
		s.next = &syncRound{}
	}
	r := s.next
	for !r.finished {
		if s.busy || r.started {
			s.cond.Wait()
			continue
		}
		s.busy, r.started, s.next = true, true, nil
		s.rounds++
		fault := s.fault
		s.mu.Unlock()
		var err error
		if fault != nil {
			err = fault()
		} else {
			err = syncfs(f)
		}
		s.mu.Lock()
		r.err, r.finished, s.busy = err, true, false
		s.cond.Broadcast()
	}
	return r.err
}

func syncfs(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = unix.Syncfs(int(fd)); serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "syncfs", Path: f.Name(), Err: serr}
	}
	return nil
}
