package daemon

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// systemd restarts a unit on a grid, not at RestartSec=. PID 1 arms the
// restart timer with sd-event's default accuracy of 250 ms, and sd-event
// fires a timer at the latest instant of its window that lies on a grid
// shared by the whole machine: every 250 ms (also every second, 10 s and
// minute), offset by a "perturbation" derived from the boot ID. Unless
// PID 1 wakes for something else, a unit whose process exits at E is
// restarted at the first grid instant at or after E + RestartSec, so a
// restart waits 0 to 250 ms for no reason; measured here, 125 ms on
// average and the whole gap between a drop and its restart.
//
// A daemon that knows the grid can keep serving until just before an
// instant and exit then: the new process starts at once, and the old one
// served meanwhile instead of leaving requests in the socket's queue.

const (
	// slotEvery is sd-event's default timer accuracy, and its finest grid.
	slotEvery = 250 * time.Millisecond
	// perturbRange is what sd-event reduces the boot ID to.
	perturbRange = time.Minute
)

// DefaultExitLead is the time allowed from the start of the drain to
// PID 1's handling of the process's exit.
const DefaultExitLead = 40 * time.Millisecond

// restartSlots is systemd's restart grid on this machine.
type restartSlots struct {
	// phase is where the grid lies within each slotEvery, on
	// CLOCK_MONOTONIC.
	phase time.Duration
}

// readRestartSlots derives the grid from the boot ID, as sd-event does:
// the two 64-bit halves of the ID (in memory order) XORed, modulo a
// minute in microseconds.
func readRestartSlots(bootIDFile string) (restartSlots, error) {
	data, err := os.ReadFile(bootIDFile)
	if err != nil {
		return restartSlots{}, err
	}
	raw, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(string(data)), "-", ""))
	if err != nil || len(raw) != 16 {
		return restartSlots{}, fmt.Errorf("%s: not a boot ID: %q", bootIDFile, strings.TrimSpace(string(data)))
	}
	x := binary.NativeEndian.Uint64(raw[:8]) ^ binary.NativeEndian.Uint64(raw[8:])
	perturb := time.Duration(x%uint64(perturbRange/time.Microsecond)) * time.Microsecond
	return restartSlots{phase: perturb % slotEvery}, nil
}

// next returns the first grid instant at or after t (CLOCK_MONOTONIC).
func (s restartSlots) next(t time.Duration) time.Duration {
	base := t - t%slotEvery + s.phase
	for base < t {
		base += slotEvery
	}
	for base-slotEvery >= t {
		base -= slotEvery
	}
	return base
}

// monotonic is CLOCK_MONOTONIC, the clock of systemd's timers.
func monotonic() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// drainAt returns how long from now the drain should start so that the
// process has exited lead later, RestartSec before a grid instant; and
// that instant, as a duration from now.
func (s restartSlots) drainAt(now, restartSec, lead time.Duration) (wait, slot time.Duration) {
	g := s.next(now + lead + restartSec)
	return g - restartSec - lead - now, g - now
}

// alignExit waits, serving, until the drain should start for systemd to
// restart the unit at once. It does nothing when not run by systemd,
// when RestartSec is not positive, or when the grid cannot be read.
func (l *life) alignExit(ctx context.Context) {
	if l.cfg.RestartSec <= 0 || os.Getenv("INVOCATION_ID") == "" {
		return
	}
	slots, err := readRestartSlots(l.cfg.bootIDFile())
	if err != nil {
		l.log.Warn("not timing the exit to systemd's restart slot", "err", err)
		return
	}
	wait, slot := slots.drainAt(monotonic(), l.cfg.RestartSec, l.cfg.ExitLead)
	l.log.Info("timing the exit to systemd's restart slot", "wait", wait.Round(time.Millisecond), "slot_in", slot.Round(time.Millisecond))
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
