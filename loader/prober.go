package loader

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/loader/buildcheck"
	"github.com/soplug/soplug/loader/probe"
)

// DefaultProbeTimeout is how long a probe child may take when
// Prober.Timeout is zero.
const DefaultProbeTimeout = 10 * time.Second

// Prober runs the preflight of one candidate in a child process: the child
// opens the plugin, finds its accessor and asks IsAcceptable, so that
// whatever the plugin does (fault, panic, exit, hang) happens to the child.
// The zero value re-executes this program with probe.Arg and a 10 s timeout.
type Prober struct {
	// Command is the child's command line; the probe arguments are appended.
	// Empty means this executable followed by probe.Arg.
	Command []string
	// Env is added to this process's environment for the child.
	Env []string
	// Timeout bounds the whole child, from start to verdict (for a spare
	// child, from when it is given its path). Zero means
	// DefaultProbeTimeout.
	Timeout time.Duration
	// Spare, when set, holds a child started ahead of need; nil probes
	// with a child started for each probe.
	Spare *Spare
}

// timeout returns Timeout or its default.
func (p Prober) timeout() time.Duration {
	if p.Timeout <= 0 {
		return DefaultProbeTimeout
	}
	return p.Timeout
}

// Probe runs the child on path and returns what it learned of the plugin:
// everything when it is acceptable, and with a refusal whatever the child
// learned before it (such as the kind). A refusal, a crash or a timeout of
// the child is a *RejectError at StageProbe; an end of ctx is returned as
// ctx's error. With a Spare holding a child, that child probes path; the
// Spare is then empty until filled again.
func (p Prober) Probe(ctx context.Context, path string) (probe.Report, error) {
	if c := p.Spare.take(); c != nil {
		return p.finish(ctx, c, path)
	}
	c, err := p.start(path)
	if err != nil {
		return probe.Report{}, reject(path, StageProbe, ErrProbe, "%v", err)
	}
	return p.finish(ctx, c, path)
}

// child is a started probe child.
type child struct {
	cmd   *exec.Cmd
	stdin *os.File // the path goes here when the child was started with probe.StdinPath; else nil
	rd    *os.File // the report pipe
	out   *headBuffer
	read  chan struct{} // closed when the report has been read to its end
	last  probe.Step
	final *probe.Message
	bad   string
}

// start starts a probe child on path, or with path "" one that waits for
// its path on standard input (probe.StdinPath).
func (p Prober) start(path string) (*child, error) {
	argv := p.Command
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding this executable: %w", err)
		}
		argv = []string{exe, probe.Arg}
	}
	// The child gets a little less time for the plugin's calls than we
	// give it, so that a hang it notices itself is reported by it.
	arg := path
	if path == "" {
		arg = probe.StdinPath
	}
	args := append(append([]string{}, argv[1:]...), "-timeout", (p.timeout() * 9 / 10).String(), arg)
	c := &child{cmd: exec.Command(argv[0], args...), out: &headBuffer{max: 8 << 10}, read: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), p.Env...)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.cmd.WaitDelay = time.Second
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("report pipe: %w", err)
	}
	c.rd = rd
	c.cmd.ExtraFiles = []*os.File{wr} // probe.ReportFD
	var inr *os.File
	if path == "" {
		if inr, c.stdin, err = os.Pipe(); err != nil {
			rd.Close()
			wr.Close()
			return nil, fmt.Errorf("path pipe: %w", err)
		}
		c.cmd.Stdin = inr
	}
	err = c.cmd.Start()
	wr.Close()
	if inr != nil {
		inr.Close()
	}
	if err != nil {
		rd.Close()
		if c.stdin != nil {
			c.stdin.Close()
		}
		return nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	go func() {
		defer close(c.read)
		defer rd.Close()
		sc := bufio.NewScanner(rd)
		sc.Buffer(make([]byte, 0, 4096), 1<<20)
		for sc.Scan() {
			var m probe.Message
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				c.bad = fmt.Sprintf("unreadable report line %q", truncate(sc.Text(), 120))
				return
			}
			if m.Done {
				c.final = &m
				return
			}
			c.last = m.Step
		}
	}()
	return c, nil
}

// kill ends the child's process group.
func (c *child) kill() {
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
}

// finish gives a waiting child its path, waits for its verdict within the
// timeout and ctx, and reads it.
func (p Prober) finish(ctx context.Context, c *child, path string) (probe.Report, error) {
	timeout := p.timeout()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if c.stdin != nil {
		_, _ = c.stdin.WriteString(path + "\n") // a child that died waiting is told by Wait
		c.stdin.Close()
	}
	exited := make(chan struct{})
	go func() {
		select {
		case <-cctx.Done():
			c.kill()
		case <-exited:
		}
	}()
	werr := c.cmd.Wait()
	close(exited)
	// The child is gone, but what it wrote may still be in the pipe: read
	// it to the end before giving up on it, or the last step can be lost
	// and a death in init reported as one before it. Only a grandchild that
	// holds the pipe open keeps it from ending; it gets a second.
	select {
	case <-c.read:
	case <-time.After(time.Second):
		c.rd.Close()
	}
	<-c.read
	last, final, bad, out := c.last, c.final, c.bad, c.out

	if final != nil && final.Error == nil && final.Report != nil && final.ABI == contract.ABIVersion {
		return *final.Report, nil
	}
	if ctx.Err() != nil {
		return probe.Report{}, ctx.Err()
	}
	switch {
	case final != nil && final.ABI != contract.ABIVersion:
		return probe.Report{}, reject(path, StageProbe, ErrProbe,
			"the probe child speaks contract ABI %d, this program %d (wrong probe command?)", final.ABI, contract.ABIVersion)
	case final != nil && final.Error != nil:
		var rep probe.Report
		if final.Report != nil {
			rep = *final.Report
		}
		err := codeError(final.Error)
		if final.Error.Code == probe.CodeOpen {
			err = explainOpen(path, err)
		}
		return rep, &RejectError{Path: path, Stage: StageProbe, Err: err}
	case bad != "":
		return probe.Report{}, reject(path, StageProbe, ErrProbe, "%s", bad)
	case errors.Is(cctx.Err(), context.DeadlineExceeded):
		return probe.Report{}, reject(path, StageProbe, ErrTimeout, "no verdict within %s %s", timeout, last.Doing())
	}
	return probe.Report{}, reject(path, StageProbe, crashKind(out.String()), "%s", crashReason(werr, last, out.String()))
}

// differentPackageRE finds the package in plugin.Open's version error.
var differentPackageRE = regexp.MustCompile(`different version of package (\S+)`)

// explainOpen adds to plugin.Open's "different version of package X" the
// build-info differences that explain it, when any are found.
func explainOpen(path string, err error) error {
	m := differentPackageRE.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	runner, rerr := buildcheck.Self()
	plugin, perr := buildcheck.Read(path)
	if rerr != nil || perr != nil {
		return err
	}
	var causes []string
	for _, d := range buildcheck.Explain(plugin, runner, m[1]) {
		causes = append(causes, d.String())
	}
	if len(causes) == 0 {
		return err
	}
	return fmt.Errorf("%w (%s)", err, strings.Join(causes, "; "))
}

// codeError maps the child's refusal to its sentinel.
func codeError(e *probe.Error) error {
	sentinel := map[probe.Code]error{
		probe.CodeOpen:          ErrOpen,
		probe.CodeNoAccessor:    ErrNoAccessor,
		probe.CodeAccessorType:  ErrAccessorType,
		probe.CodeNil:           ErrNilPlugin,
		probe.CodePanic:         ErrPanic,
		probe.CodeTimeout:       ErrTimeout,
		probe.CodeNotAcceptable: ErrNotAcceptable,
	}[e.Code]
	if sentinel == nil {
		sentinel = ErrProbe
	}
	if e.Err != nil {
		return fmt.Errorf("%w: %w", sentinel, e.Err)
	}
	return fmt.Errorf("%w: %s", sentinel, e.Msg)
}

// crashKind tells a Go panic from any other death of the child.
func crashKind(output string) error {
	if strings.HasPrefix(firstLine(output, "panic: "), "panic: ") {
		return ErrPanic
	}
	return ErrCrash
}

// crashReason describes how the child died, during which step, and with the
// runtime's own words when it left any.
func crashReason(werr error, last probe.Step, output string) string {
	var how string
	var ee *exec.ExitError
	switch {
	case errors.As(werr, &ee) && ee.Sys() != nil:
		ws := ee.Sys().(syscall.WaitStatus)
		switch {
		case ws.Signaled():
			how = fmt.Sprintf("the probe child was killed by %s (%s)", signalName(ws.Signal()), ws.Signal())
		default:
			how = fmt.Sprintf("the probe child exited with status %d", ws.ExitStatus())
		}
	case werr != nil:
		how = fmt.Sprintf("the probe child failed: %v", werr)
	default:
		how = "the probe child exited with status 0 without a verdict"
	}
	how += " " + last.Doing()
	crash := firstLine(output, "panic: ", "fatal error: ", "unexpected fault address", "SIGSEGV", "SIGBUS")
	if crash != "" {
		how += ": " + truncate(crash, 300)
		if sig := firstLine(output, "[signal "); sig != "" && sig != crash {
			how += " " + truncate(sig, 120)
		}
	} else if last == probe.StepOpen && !strings.Contains(how, "killed") {
		how += " (did its init call os.Exit?)"
	}
	return how
}

func signalName(s syscall.Signal) string {
	names := map[syscall.Signal]string{
		syscall.SIGBUS: "SIGBUS", syscall.SIGSEGV: "SIGSEGV", syscall.SIGKILL: "SIGKILL",
		syscall.SIGABRT: "SIGABRT", syscall.SIGILL: "SIGILL", syscall.SIGFPE: "SIGFPE",
		syscall.SIGTERM: "SIGTERM", syscall.SIGTRAP: "SIGTRAP",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return fmt.Sprintf("signal %d", int(s))
}

// firstLine returns the first line of s that starts with one of prefixes.
func firstLine(s string, prefixes ...string) string {
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				return line
			}
		}
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// headBuffer keeps the first max bytes written to it: the runtime prints the
// reason for a crash first, and a plugin that floods its output must not
// grow the daemon's memory.
type headBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *headBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if room := t.max - len(t.buf); room > 0 {
		t.buf = append(t.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (t *headBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
