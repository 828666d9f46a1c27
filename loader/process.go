package loader

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/contract/serve"
	"github.com/soplug/soplug/loader/probe"
)

// Defaults of ProcessConfig.
const (
	DefaultMaxRestarts    = 5
	DefaultRestartWindow  = time.Minute
	DefaultRestartBackoff = 100 * time.Millisecond
	// maxRestartBackoff is where the doubling backoff stops, unless
	// RestartBackoff starts above it.
	maxRestartBackoff = 5 * time.Second
)

// ProcessConfig configures out-of-process plugins. The zero value starts
// them with Prober.Timeout to answer, restarts a crashed one up to
// DefaultMaxRestarts times a DefaultRestartWindow, and logs their output
// nowhere.
type ProcessConfig struct {
	// Checksum, when set, returns the SHA-256 an executable must have
	// (from the trust manifest); go-plugin checks it before it starts the
	// file. Nil, or a nil sum, means no check.
	Checksum func(path string) ([]byte, error)
	// MetricsAddr, when set, returns the address a plugin process serves
	// its own /metrics on (passed as serve.MetricsAddrEnv); "" for none.
	MetricsAddr func(name, version string) string
	// MaxRestarts is how many times a selected plugin process that dies is
	// started again within RestartWindow before OnGiveUp. Zero means
	// DefaultMaxRestarts.
	MaxRestarts int
	// RestartWindow: see MaxRestarts. Zero means DefaultRestartWindow.
	RestartWindow time.Duration
	// RestartBackoff is the wait before a dead plugin process is started
	// again; it doubles with each death in a row, up to 5 s (or
	// RestartBackoff when that is more), and starts over once a process
	// is up. Zero means DefaultRestartBackoff.
	RestartBackoff time.Duration
	// OnGiveUp, when set, is called once when a selected plugin process
	// has died more than MaxRestarts times: the daemon quarantines the
	// version and restarts onto the next one.
	OnGiveUp func(c *Candidate, err error)
	// Logger receives the plugin processes' stdout, stderr and go-plugin's
	// own log. Nil means none.
	Logger *slog.Logger
}

// started is a plugin process that passed the handshake.
type started struct {
	client *goplugin.Client
	rpc    *serve.Client
	out    *headBuffer // the start of its stderr
}

// startProcess starts the executable at path and completes go-plugin's
// handshake within timeout. The error is a *RejectError at stage.
func startProcess(cfg ProcessConfig, path, name, version string, timeout time.Duration, stage Stage) (*started, error) {
	cmd := exec.Command(path)
	cmd.Env = os.Environ()
	if cfg.MetricsAddr != nil {
		if addr := cfg.MetricsAddr(name, version); addr != "" {
			cmd.Env = append(cmd.Env, serve.MetricsAddrEnv+"="+addr)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphan if the runner dies
	var sec *goplugin.SecureConfig
	if cfg.Checksum != nil {
		sum, err := cfg.Checksum(path)
		if err != nil {
			return nil, reject(path, StageAdmit, ErrNotAdmitted, "%v", err)
		}
		if sum != nil {
			sec = &goplugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("plugin", name, "version", version, "pid_of", path)
	out := &headBuffer{max: 4 << 10}
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  serve.Handshake,
		Plugins:          serve.Plugins,
		Cmd:              cmd,
		SecureConfig:     sec,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		StartTimeout:     timeout,
		Logger:           newHCLogger(log),
		Stderr:           out,
		SyncStdout:       &lineLog{log: log, stream: "stdout"},
		SyncStderr:       &lineLog{log: log, stream: "stderr"},
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, startError(path, stage, err, out.String())
	}
	raw, err := rpc.Dispense(serve.PluginName)
	if err != nil {
		client.Kill()
		return nil, reject(path, stage, ErrHandshake, "dispensing the plugin: %v", err)
	}
	return &started{client: client, rpc: raw.(*serve.Client), out: out}, nil
}

// startError classifies go-plugin's start errors.
func startError(path string, stage Stage, err error, stderr string) error {
	msg := err.Error()
	detail := ""
	for line := range strings.Lines(stderr) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "{") { // not go-plugin's own JSON log
			detail = fmt.Sprintf(" (its stderr: %q)", truncate(line, 200))
			break
		}
	}
	switch {
	case errors.Is(err, goplugin.ErrChecksumsDoNotMatch):
		return reject(path, StageAdmit, ErrNotAdmitted, "its SHA-256 is not the manifest's: go-plugin refused to start it")
	case strings.Contains(msg, "exited before we could connect"):
		return reject(path, stage, ErrProcessExited, "the plugin process exited during its start, before the handshake%s", detail)
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return reject(path, stage, ErrTimeout, "the plugin process did not complete its handshake in time%s", detail)
	}
	return reject(path, stage, ErrHandshake, "%v%s", err, detail)
}

// ask asks a started plugin its kind, version and whether it is
// acceptable, within ctx.
func (s *started) ask(ctx context.Context, path string, stage Stage) (probe.Report, error) {
	kind, err := s.rpc.Kind(ctx)
	if err == nil && kind != contract.KindTransformer && kind != contract.KindOplogProcessor {
		err = fmt.Errorf("unknown kind %q", kind)
	}
	if err != nil {
		return probe.Report{}, s.callError(ctx, path, stage, "Kind()", err)
	}
	rep := probe.Report{Kind: kind}
	if rep.Version, err = s.rpc.PluginVersion(ctx); err != nil {
		return rep, s.callError(ctx, path, stage, "Version()", err)
	}
	ok, err := s.rpc.Acceptable(ctx)
	if err != nil {
		return rep, s.callError(ctx, path, stage, "IsAcceptable()", err)
	}
	if !ok {
		return rep, reject(path, stage, ErrNotAcceptable, "IsAcceptable() returned false (in the plugin process)")
	}
	return rep, nil
}

func (s *started) callError(ctx context.Context, path string, stage Stage, call string, err error) error {
	switch {
	case ctx.Err() != nil:
		return reject(path, stage, ErrTimeout, "no answer to %s in time", call)
	case s.client.Exited():
		return reject(path, stage, ErrProcessExited, "the plugin process exited during %s", call)
	}
	return reject(path, stage, ErrProbe, "%s: %v", call, err)
}

// probeProcess is the probe of an out-of-process candidate: start it, ask
// it, stop it. Its own process is the isolation the .so probe's child is.
func (l *Loader) probeProcess(ctx context.Context, c *Candidate) (probe.Report, error) {
	s, rep, err := l.startAsked(ctx, c, StageProbe, l.cfg.Prober.timeout())
	if err == nil {
		s.client.Kill()
	}
	return rep, err
}

// startAsked starts c's executable and asks it its kind, version and
// acceptance within ask; on an error nothing is left running.
func (l *Loader) startAsked(ctx context.Context, c *Candidate, stage Stage, ask time.Duration) (*started, probe.Report, error) {
	ver := ""
	if c.Version != nil {
		ver = c.Version.String()
	}
	s, err := startProcess(l.cfg.Process, c.Path, c.Name, ver, l.cfg.Prober.timeout(), stage)
	if err != nil {
		return nil, probe.Report{}, err
	}
	actx, cancel := context.WithTimeout(ctx, ask)
	defer cancel()
	rep, err := s.ask(actx, c.Path, stage)
	if err != nil {
		s.client.Kill()
		return nil, rep, err
	}
	return s, rep, nil
}

// loadProcess starts the selected out-of-process candidate for good and
// supervises it.
func (l *Loader) loadProcess(ctx context.Context, c *Candidate) (probe.Report, error) {
	s, rep, err := l.startAsked(ctx, c, StageLoad, l.cfg.LoadTimeout)
	if err != nil {
		return rep, err
	}
	timeout := l.cfg.Prober.timeout()
	p := &procPlugin{cfg: l.cfg.Process, cand: c, timeout: timeout, cur: s, done: make(chan struct{}), log: l.log}
	if p.cfg.MaxRestarts <= 0 {
		p.cfg.MaxRestarts = DefaultMaxRestarts
	}
	if p.cfg.RestartWindow <= 0 {
		p.cfg.RestartWindow = DefaultRestartWindow
	}
	if p.cfg.RestartBackoff <= 0 {
		p.cfg.RestartBackoff = DefaultRestartBackoff
	}
	go p.supervise()
	switch rep.Kind {
	case contract.KindTransformer:
		rep.Plugin = &procTransformer{p}
	default:
		rep.Plugin = &procProcessor{p}
	}
	return rep, nil
}

// procPlugin is a selected plugin process, started again when it dies.
type procPlugin struct {
	cfg     ProcessConfig
	cand    *Candidate
	timeout time.Duration
	log     *slog.Logger
	done    chan struct{}

	mu       sync.Mutex
	cur      *started // nil while restarting
	restarts []time.Time
	total    int
	closed   bool
	gaveUp   bool
	lastErr  string          // why the process last died or failed to start
	initCfg  contract.Config // replayed after a restart of an OplogProcessor
	inited   bool
}

// Process states.
const (
	ProcessRunning    = "running"
	ProcessRestarting = "restarting"
	ProcessGaveUp     = "given up"
)

// ProcessStatus is the state of an out-of-process plugin.
type ProcessStatus struct {
	// State is ProcessRunning, ProcessRestarting (it died and is being
	// started again) or ProcessGaveUp (it died too often; the daemon
	// restarts onto another version).
	State string `json:"state"`
	// LastError says why the process last died or failed to start; empty
	// when it never did.
	LastError string `json:"last_error,omitempty"`
	// PID is the current process; 0 while it is being started again.
	PID int `json:"pid"`
	// Restarts counts the times it was started again after it died.
	Restarts int `json:"restarts"`
	// MetricsAddr is where the process serves its own /metrics; empty for
	// none.
	MetricsAddr string `json:"metrics_addr,omitempty"`
}

func (p *procPlugin) status() ProcessStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := ProcessStatus{Restarts: p.total, LastError: p.lastErr, State: ProcessRestarting}
	switch {
	case p.gaveUp:
		st.State = ProcessGaveUp
	case p.cur != nil:
		st.State = ProcessRunning
	}
	if p.cur != nil {
		if rc := p.cur.client.ReattachConfig(); rc != nil {
			st.PID = rc.Pid
		}
	}
	if p.cfg.MetricsAddr != nil {
		st.MetricsAddr = p.cfg.MetricsAddr(p.cand.Name, p.cand.Version.String())
	}
	return st
}

// client returns the current process's client, or an error a caller
// answers with 503 while it is being started again.
func (p *procPlugin) client() (*serve.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return nil, &serve.UnavailableError{Err: fmt.Errorf("%s %s is being restarted after its process died", p.cand.Name, p.cand.Version)}
	}
	return p.cur.rpc, nil
}

// supervise watches the process through go-plugin's gRPC health service and
// starts it again when it dies, with a doubling backoff, until it has died
// more than MaxRestarts times within RestartWindow.
func (p *procPlugin) supervise() {
	backoff := p.cfg.RestartBackoff
	for {
		p.mu.Lock()
		cur := p.cur
		p.mu.Unlock()
		if cur != nil && !p.waitExit(cur) {
			return // closed
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		if cur != nil {
			cur.client.Kill()
			p.log.Error("plugin process died; starting it again", "plugin", p.cand.Name, "version", p.cand.Version.String(),
				"output", truncate(cur.out.String(), 500))
		}
		if cur != nil {
			p.lastErr = "the process died: " + deathLine(cur.out.String())
		}
		p.cur = nil
		now := time.Now()
		p.restarts = append(p.restarts, now)
		for len(p.restarts) > 0 && now.Sub(p.restarts[0]) > p.cfg.RestartWindow {
			p.restarts = p.restarts[1:]
		}
		giveUp := len(p.restarts) > p.cfg.MaxRestarts
		p.gaveUp = giveUp
		p.mu.Unlock()
		if giveUp {
			err := fmt.Errorf("the plugin process died %d times within %s", len(p.restarts), p.cfg.RestartWindow)
			p.log.Error("giving up on a plugin process", "plugin", p.cand.Name, "version", p.cand.Version.String(), "err", err)
			if p.cfg.OnGiveUp != nil {
				p.cfg.OnGiveUp(p.cand, err)
			}
			return
		}
		select {
		case <-p.done:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, max(maxRestartBackoff, p.cfg.RestartBackoff))
		s, err := startProcess(p.cfg, p.cand.Path, p.cand.Name, p.cand.Version.String(), p.timeout, StageLoad)
		if err == nil {
			err = p.reinit(s)
		}
		if err != nil {
			p.mu.Lock()
			p.lastErr = "starting it again: " + err.Error()
			p.mu.Unlock()
			p.log.Error("starting the plugin process again failed", "plugin", p.cand.Name, "err", err)
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			s.client.Kill()
			return
		}
		p.cur, p.total = s, p.total+1
		p.mu.Unlock()
		backoff = p.cfg.RestartBackoff
		p.log.Info("plugin process started again", "plugin", p.cand.Name, "version", p.cand.Version.String())
	}
}

// reinit gives a restarted OplogProcessor the configuration its first
// process was initialised with.
func (p *procPlugin) reinit(s *started) error {
	p.mu.Lock()
	cfg, inited := p.initCfg, p.inited
	p.mu.Unlock()
	if !inited {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	if err := s.rpc.Init(ctx, cfg); err != nil {
		s.client.Kill()
		return err
	}
	return nil
}

// waitExit returns true when cur's process has died (or stopped answering
// its health check twice in a row), false when p is closed first.
func (p *procPlugin) waitExit(cur *started) bool {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-p.done:
			return false
		case <-t.C:
		}
		if cur.client.Exited() {
			return true
		}
		rpc, err := cur.client.Client()
		if err == nil {
			err = rpc.Ping()
		}
		if err != nil {
			misses++
		} else {
			misses = 0
		}
		if misses >= 2 {
			return true
		}
	}
}

// kill stops the process and its supervision.
func (p *procPlugin) kill() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	cur := p.cur
	p.cur = nil
	p.mu.Unlock()
	if cur != nil {
		cur.client.Kill()
	}
}

// procTransformer is a contract.Transformer in a plugin process.
type procTransformer struct{ *procPlugin }

func (t *procTransformer) Version() string    { return t.cand.Version.String() }
func (t *procTransformer) IsAcceptable() bool { return true }
func (t *procTransformer) Transform(ctx context.Context, component []byte, cfg contract.Config) ([]byte, error) {
	c, err := t.client()
	if err != nil {
		return nil, err
	}
	return c.Transform(ctx, component, cfg)
}

// procProcessor is a contract.OplogProcessor in a plugin process.
type procProcessor struct{ *procPlugin }

func (o *procProcessor) Version() string    { return o.cand.Version.String() }
func (o *procProcessor) IsAcceptable() bool { return true }
func (o *procProcessor) Init(ctx context.Context, cfg contract.Config) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.initCfg, o.inited = cfg, true
	o.mu.Unlock()
	return c.Init(ctx, cfg)
}
func (o *procProcessor) Process(ctx context.Context, b contract.Batch) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	return c.Process(ctx, b)
}
func (o *procProcessor) Close(ctx context.Context) error {
	c, err := o.client()
	if err != nil {
		return nil
	}
	return c.Close(ctx)
}

// processOf returns the plugin process behind a selected candidate's
// Plugin, or nil for a native one.
func processOf(p contract.Plugin) *procPlugin {
	switch v := p.(type) {
	case *procTransformer:
		return v.procPlugin
	case *procProcessor:
		return v.procPlugin
	}
	return nil
}

// ProcessStatus returns the state of the candidate's plugin process, or
// nil when it was not loaded out of process.
func (c *Candidate) ProcessStatus() *ProcessStatus {
	if p := processOf(c.Plugin); p != nil {
		st := p.status()
		return &st
	}
	return nil
}

// Close stops the plugin processes of the selection: the daemon calls it on
// the way out, so that none outlives it.
func (s *Selection) Close() {
	for _, c := range s.Selected() {
		if p := processOf(c.Plugin); p != nil {
			p.kill()
		}
	}
}

// deathLine is the line of a process's output that says why it died: a Go
// panic's or fatal error's, else the last one there is.
func deathLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			return truncate(strings.TrimSpace(l), 300)
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return truncate(l, 300)
		}
	}
	return "(no output)"
}
