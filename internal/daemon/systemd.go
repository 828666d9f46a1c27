package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/soplug/soplug/internal/quarantine"
)

// notify sends state to systemd. Without systemd (no NOTIFY_SOCKET) it does
// nothing; a failure to send is logged, never fatal.
func notify(log *slog.Logger, state string) {
	sent, err := sd.SdNotify(false, state)
	if err != nil {
		log.Warn("sd_notify failed", "state", state, "err", err)
		return
	}
	if sent {
		log.Debug("sd_notify", "state", state)
	}
}

// watchdog sends WATCHDOG=1 at half of WatchdogSec until ctx ends, when
// systemd asks for it; otherwise it returns at once. While stuck reports a
// call into a plugin stuck past its deadline, it sends nothing: systemd
// then aborts the runner (SIGABRT, WatchdogSignal=), the Go runtime writes
// every goroutine's stack to the crash output, and the next start blames
// the plugin whose call was running.
func watchdog(ctx context.Context, log *slog.Logger, stuck func() (string, bool)) {
	interval, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("reading the systemd watchdog settings", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	log.Info("systemd watchdog enabled", "interval", interval, "ping_every", interval/2)
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	starved := false
	for {
		if what, ok := stuck(); ok {
			if !starved {
				log.Error("a plugin call is stuck: the watchdog is no longer fed, and systemd will abort this process with every goroutine's stack",
					"stuck", what, "within", interval)
			}
			starved = true
		} else {
			if starved {
				log.Warn("the stuck plugin call ended: feeding the watchdog again")
			}
			starved = false
			notify(log, sd.SdNotifyWatchdog)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Stucker is a Service that can tell a call into a plugin stuck past its
// deadline (see watchdog).
type Stucker interface {
	// Stuck describes the stuck call, and reports whether there is one.
	Stuck() (string, bool)
}

// CallCounter is a Service that counts its calls into each plugin version
// while they run (quarantine.Mark), so that the next start knows which
// calls a kill that leaves no stack interrupted. The daemon calls
// CountCalls before Start.
type CallCounter interface {
	// CountCalls gives the service the counter of each version's calls;
	// mark returns nil, which counts nothing, for a version not loaded in
	// process.
	CountCalls(mark quarantine.MarkFunc)
}

// stuck asks every service that is a Stucker.
func stuck(services []Service) func() (string, bool) {
	return func() (string, bool) {
		for _, s := range services {
			if st, ok := s.(Stucker); ok {
				if what, ok := st.Stuck(); ok {
					return what, true
				}
			}
		}
		return "", false
	}
}

// listeners returns the sockets systemd passed (socket activation), or,
// when it passed none, a TCP listener on addr. The activation variables are
// removed from the environment and the sockets marked close-on-exec, so
// probe children inherit neither.
func listeners(addr string) ([]net.Listener, string, error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, "", fmt.Errorf("daemon: sockets from systemd: %w", err)
	}
	var got []net.Listener
	for _, ln := range lns {
		if ln != nil { // nil for a passed socket that is not a stream listener
			got = append(got, ln)
		}
	}
	if len(got) > 0 {
		return got, "systemd socket activation", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("daemon: listening on %s: %w", addr, err)
	}
	return []net.Listener{ln}, "--listen", nil
}
