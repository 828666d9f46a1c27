package quarantine

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/soplug/soplug/internal/atomicfile"
)

// CrashFile is the file in the state directory the daemon gives the Go
// runtime for its crash output (runtime/debug.SetCrashOutput): a fatal
// panic, fault or signal writes the stacks there, which name the plugin
// whose code was running.
const CrashFile = "crash.log"

// StopFile is the file in the state directory where `runner stop-post`
// (systemd's ExecStopPost=) records how systemd saw the run end.
const StopFile = "stop.json"

// Stop is systemd's account of a run's end, from the environment of
// ExecStopPost=: $SERVICE_RESULT ("success", "oom-kill", "timeout",
// "signal", "core-dump", "exit-code", "watchdog"), $EXIT_CODE ("exited",
// "killed", "dumped") and $EXIT_STATUS (a number or a signal name).
type Stop struct {
	Result     string    `json:"service_result"`
	ExitCode   string    `json:"exit_code,omitempty"`
	ExitStatus string    `json:"exit_status,omitempty"`
	At         time.Time `json:"at"`
}

// String returns "SERVICE_RESULT=oom-kill EXIT_CODE=killed EXIT_STATUS=KILL".
func (s Stop) String() string {
	return fmt.Sprintf("SERVICE_RESULT=%s EXIT_CODE=%s EXIT_STATUS=%s", s.Result, s.ExitCode, s.ExitStatus)
}

// killed reports whether systemd saw the run killed from outside: the OOM
// killer, or its own SIGKILL after a stop timed out. No plugin is blamed
// for that without a stack that names it.
func (s Stop) killed() bool {
	return s.Result == "oom-kill" || s.Result == "timeout" || s.ExitStatus == "KILL"
}

// RecordStop writes stop to dir's StopFile, durably, for the next run's
// Begin. An empty Dir does nothing. It is safe as root in a folder the
// service's user owns (the unit runs stop-post with "+", outside the
// sandbox): the record is written with atomicfile.WriteFor, which follows
// nothing planted there, and given to the folder's owner, so that the next
// run, as that user, reads and replaces it. Root does not create a missing
// folder: it would be root's, and the service could not write to it.
func (s *Store) RecordStop(stop Stop) error {
	if !s.enabled() {
		return nil
	}
	if stop.Result == "" {
		return fmt.Errorf("quarantine: no SERVICE_RESULT: runner stop-post is meant for systemd's ExecStopPost=")
	}
	if stop.At.IsZero() {
		stop.At = time.Now().UTC()
	}
	data, err := json.Marshal(stop)
	if err != nil {
		return err
	}
	root := os.Geteuid() == 0
	if !root {
		if err := os.MkdirAll(s.Dir, 0o750); err != nil {
			return fmt.Errorf("quarantine: state directory: %w", err)
		}
	}
	st, err := os.Stat(s.Dir)
	if err != nil {
		return fmt.Errorf("quarantine: state directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("quarantine: state directory %s: not a folder", s.Dir)
	}
	uid, gid := -1, -1
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && root {
		uid, gid = int(sys.Uid), int(sys.Gid)
	}
	return atomicfile.WriteFor(filepath.Join(s.Dir, StopFile), data, 0o600, uid, gid)
}

// evidence is what the previous run left: its crash output, systemd's
// account of its end, and the calls in flight (MarksFile) by version key.
type evidence struct {
	crash    string
	stop     *Stop
	inflight map[string]int64
}

// readEvidence reads dir's CrashFile and StopFile; missing ones are no
// evidence, unreadable ones are errors.
func readEvidence(dir string) (evidence, error) {
	var ev evidence
	data, err := os.ReadFile(filepath.Join(dir, CrashFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return ev, fmt.Errorf("quarantine: %w", err)
	}
	ev.crash = string(data)
	data, err = os.ReadFile(filepath.Join(dir, StopFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return ev, fmt.Errorf("quarantine: %w", err)
	default:
		var st Stop
		if err := json.Unmarshal(data, &st); err != nil {
			return ev, fmt.Errorf("quarantine: %s is not valid JSON: %w", filepath.Join(dir, StopFile), err)
		}
		ev.stop = &st
	}
	return ev, nil
}

// callers are the prefixes of the runner's frames that call into plugins:
// a goroutine with one of them under a plugin's frame was in a call to it.
var callers = []string{
	"github.com/soplug/soplug/internal/transform.",
	"github.com/soplug/soplug/internal/oplog.",
	"github.com/soplug/soplug/loader.",
}

// inStacks returns, for each plugin path in paths (key → plugin path), the
// first stack line that names it in crash, Go's crash output: in a panic
// or fatal error the first goroutine's (the one that failed), after a
// signal (SIGABRT from the watchdog, SIGQUIT) any goroutine that was in a
// call from the runner into the plugin. A plugin's goroutine idle in its
// own code is no evidence.
func inStacks(crash string, paths map[string]string) map[string]string {
	found := map[string]string{}
	if strings.TrimSpace(crash) == "" {
		return found
	}
	signal := false
	var blocks [][]string
	var cur []string
	sc := bufio.NewScanner(strings.NewReader(crash))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case len(blocks) == 0 && cur == nil && (strings.HasPrefix(line, "SIGABRT") || strings.HasPrefix(line, "SIGQUIT")):
			signal = true
		case strings.HasPrefix(line, "goroutine "):
			if cur != nil {
				blocks = append(blocks, cur)
			}
			cur = []string{}
		case cur != nil:
			cur = append(cur, strings.TrimSpace(line))
		}
	}
	if cur != nil {
		blocks = append(blocks, cur)
	}
	if !signal && len(blocks) > 1 {
		blocks = blocks[:1]
	}
	for _, b := range blocks {
		called := !signal
		for _, l := range b {
			for _, c := range callers {
				called = called || strings.HasPrefix(l, c)
			}
		}
		if !called {
			continue
		}
		for _, l := range b {
			for k, p := range paths {
				if _, ok := found[k]; !ok && p != "" && (strings.HasPrefix(l, p+".") || strings.HasPrefix(l, p+"/")) {
					found[k] = l
				}
			}
		}
	}
	return found
}
