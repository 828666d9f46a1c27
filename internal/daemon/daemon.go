// Package daemon is the soplug runner's lifecycle: it selects and loads the
// plugins, serves them, tells systemd how it is doing, and exits for a
// restart when the plugins folder changes.
//
// One run of the daemon is one selection: Go plugins cannot be unloaded, so
// a new set of plugins takes a new process. When the folder changes in a way
// that can alter the selection, Run stops accepting work, drains what is in
// flight, sends STOPPING=1 and returns ErrRestart; the runner exits with
// exitcode.Restart (75) and systemd (RestartForceExitStatus=75) starts it again. With
// socket activation the listening socket stays open in systemd meanwhile,
// so connections made during the restart wait in its queue instead of
// being refused.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soplug/soplug/internal/access"
	"github.com/soplug/soplug/internal/quarantine"
	"github.com/soplug/soplug/internal/stagger"
	"github.com/soplug/soplug/internal/trust"
	"github.com/soplug/soplug/loader"
)

// ErrRestart is returned, wrapped with what changed, by Run when the
// plugins changed and the process should be started again.
var ErrRestart = errors.New("daemon: plugins changed, restart")

// DefaultAtomicDebounce ends a burst of folder events that only created,
// renamed or removed files: an atomic drop needs no longer wait. It covers
// the renames one tool makes one after another (microseconds apart); a
// change split across two bursts costs no more than one more restart, as
// the next process reads the folder as it is when it starts. Each drop and
// rollback waits it out before anything else, so it is kept short.
const DefaultAtomicDebounce = 10 * time.Millisecond

// CacheFile is the verdict cache's name in the state directory.
const CacheFile = "verdicts.json"

// Defaults for the zero Config.
const (
	DefaultListen       = "127.0.0.1:7420"
	DefaultDebounce     = 300 * time.Millisecond
	DefaultDrainTimeout = 10 * time.Second
	DefaultMinUptime    = 2 * time.Second
	// DefaultReadHeaderTimeout bounds how long a client may take to send
	// its request headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultBodyTime is how long past ReadHeaderTimeout the zero
	// ReadTimeout lets a request's body take.
	DefaultBodyTime = 30 * time.Second
	// MaxHeaderBytes bounds a request's headers. The daemon's own
	// endpoints read no body; a Service bounds the bodies it reads.
	MaxHeaderBytes = 64 << 10
)

// Service serves what the selected plugins do, on the daemon's listener.
type Service interface {
	// Start is called once after the selection, before the listener
	// serves: it registers the service's routes on mux and its metrics on
	// reg, for the plugins in sel, and starts its background work, which
	// lasts until Stop. An error ends the run as a failure.
	Start(ctx context.Context, sel *loader.Selection, mux *http.ServeMux, reg prometheus.Registerer) error
	// Drain is called when the daemon stops accepting: requests that
	// arrive after it should be refused quickly (503), and no new
	// background work begun, while what is running finishes.
	Drain()
	// Stop is called after the listener has drained: it waits for the
	// service's background work to end, for as long as ctx allows, and
	// releases what Start acquired.
	Stop(ctx context.Context) error
}

// Reporter is a Service with a state of its own to show in /v1/health.
type Reporter interface {
	// Report returns the service's name and state, marshalled as JSON
	// under that name in the report's services.
	Report() (string, any)
}

// Config configures Run. The zero value serves ./plugins on DefaultListen
// (or on the sockets systemd passes), keeps no quarantine state, and logs
// nothing.
type Config struct {
	// Loader selects the plugins. Run always sets its Admit hook (the trust
	// policy, then the quarantine records: see Admission) and its
	// BeforeLoad hook (the quarantine record of what this run loads; a
	// no-op without a StateDir), replacing any given here.
	Loader loader.Config
	// Listen is the TCP address to serve on when systemd passes no socket.
	// Empty means DefaultListen.
	Listen string
	// StateDir keeps the quarantine records. Empty means no quarantine.
	StateDir string
	// Trust is the policy every candidate must pass before its checks. Nil
	// means the zero trust.Policy: owner and mode checks only.
	Trust *trust.Policy
	// SettleAfter is how long a run serves before it is settled: an unclean
	// end before that may be blamed on a newcomer for being the only
	// unproven version loaded (its load or first calls); after it only a
	// crash stack that names a version blames it. Zero means
	// DefaultSettleAfter.
	SettleAfter time.Duration
	// QuarantineAfter is how many unclean ends in a row quarantine a
	// version. Zero means quarantine.DefaultThreshold.
	QuarantineAfter int
	// Debounce is the quiet period that ends a burst of folder events.
	// Zero means DefaultDebounce.
	Debounce time.Duration
	// DrainTimeout bounds the wait for in-flight requests on the way out.
	// Zero means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// MinUptime is the least time a process serves before it exits for a
	// change, so that a stream of drops cannot restart it faster than
	// systemd's start limit allows. Zero means DefaultMinUptime; negative
	// means none.
	MinUptime time.Duration
	// RestartSec is the unit's RestartSec=. When it is positive, the
	// daemon under systemd keeps serving until just before systemd's next
	// restart slot and exits then (restartslot.go): PID 1 restarts a unit
	// only on a 250 ms grid, or when something else wakes it after the
	// RestartSec= wait. Zero (the shipped unit's RestartSec=0, restarted
	// by the first connection after the exit) means exit at once.
	RestartSec time.Duration
	// ExitLead is the time allowed from the start of the drain to PID 1's
	// handling of the exit, for RestartSec. Zero means DefaultExitLead.
	ExitLead time.Duration
	// BootIDFile is where the boot ID is read, for RestartSec. Empty means
	// /proc/sys/kernel/random/boot_id.
	BootIDFile string
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers, so that slow clients cannot hold connections. Zero
	// means DefaultReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds how long a client may take to send a whole
	// request, headers and body: a body still arriving then is answered
	// 408. Zero means ReadHeaderTimeout + DefaultBodyTime.
	ReadTimeout time.Duration
	// PluginMetricsPorts, when its first port is not zero, is the range
	// of TCP ports (first, last) on 127.0.0.1 from which each plugin
	// process gets one to serve its own /metrics on; /v1/health lists
	// them. Zero means the plugin processes serve none.
	PluginMetricsPorts [2]int
	// PluginScrapeTimeout bounds the scrape of the plugin processes'
	// /metrics that each scrape of /metrics makes, to merge their series.
	// Zero means DefaultPluginScrapeTimeout.
	PluginScrapeTimeout time.Duration
	// Services serve the selected plugins. None means the daemon serves
	// only its health and metrics endpoints.
	Services []Service
	// Guard asks the listener's requests for tokens and serves it with
	// TLS, as it is configured (package access). Nil means neither.
	Guard *access.Guard
	// Watch are files besides the plugins folder whose change restarts
	// the daemon, like a plugin drop: its configuration.
	Watch []string
	// BeforeRestart, when set, is asked before the daemon exits for a
	// change: an error means the new set cannot start (a configuration
	// that does not validate), so the daemon logs it, keeps serving, and
	// waits for the next change.
	BeforeRestart func() error
	// Stagger is the group of runners that serve the same socket, so that
	// they restart one at a time: this one serves in it from MinUptime
	// after its start (once ready with some plugin) to the drain, and
	// before it exits for a change it waits until no other is restarting
	// and another serves (package stagger). Nil means a runner
	// alone, whose socket waits in systemd's queue while it restarts.
	Stagger *stagger.Group
	// Logger receives the daemon's log. Nil means none.
	Logger *slog.Logger
}

func (c *Config) bootIDFile() string {
	if c.BootIDFile == "" {
		return "/proc/sys/kernel/random/boot_id"
	}
	return c.BootIDFile
}

func (c *Config) defaults() {
	if c.Loader.Dir == "" {
		c.Loader.Dir = loader.DefaultDir
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Debounce <= 0 {
		c.Debounce = DefaultDebounce
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.MinUptime == 0 {
		c.MinUptime = DefaultMinUptime
	}
	if c.ExitLead <= 0 {
		c.ExitLead = DefaultExitLead
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = c.ReadHeaderTimeout + DefaultBodyTime
	}
	if c.SettleAfter <= 0 {
		c.SettleAfter = DefaultSettleAfter
	}
}

// DefaultSettleAfter is Config.SettleAfter when zero.
const DefaultSettleAfter = 30 * time.Second

// Run is one life of the daemon. It returns nil after a clean stop (ctx
// ended: SIGTERM), an error wrapping ErrRestart after a change of plugins,
// and any other error for a failure (the folder or the state cannot be
// read, no socket to serve on). Its stages follow the data: the
// quarantine record of the previous run, the watch and the listeners, the
// selection, the services, ready, the wait for a change or a signal, the
// drain, the exit.
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	l := &life{cfg: cfg, log: cfg.Logger, start: time.Now(), giveUp: make(chan string, 1)}
	if err := l.record(); err != nil {
		return err
	}
	if err := l.watchAndListen(); err != nil {
		return err
	}
	defer l.watch.Close()
	wctx, stopWatchdog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatchdog()
	go watchdog(wctx, l.log, stuck(cfg.Services))

	selErr := l.selectPlugins(ctx)
	defer l.sel.Close() // on every way out: no plugin process outlives the daemon
	switch {
	case ctx.Err() != nil:
		closeAll(l.lns)
		return cleanExit(l.store, nil)
	case selErr != nil:
		closeAll(l.lns)
		return selErr
	}
	if err := l.startServices(ctx); err != nil {
		closeAll(l.lns)
		return err
	}
	l.ready()
	defer l.spare.Close() // after the timer's stop, below: a Fill that ran is undone
	defer l.fillSpare()()
	settle := time.AfterFunc(l.cfg.SettleAfter, func() {
		if err := l.store.Settle(); err != nil {
			l.log.Warn("recording that this run has settled", "err", err)
		}
	})
	defer settle.Stop()
	result := l.wait(ctx)
	l.drain(ctx, result)
	if result != nil && !errors.Is(result, ErrRestart) {
		return result
	}
	return cleanExit(l.store, result)
}

// processes configures the loader's out-of-process plugins: their log,
// their checksum from the trust manifest, their metrics ports, and what
// happens when one keeps dying: its version is quarantined and the daemon
// restarts onto the next one.
func processes(pc *loader.ProcessConfig, cfg Config, policy *trust.Policy, store *quarantine.Store, cache *loader.Cache, log *slog.Logger, giveUp chan<- string) {
	if pc.Logger == nil {
		pc.Logger = log
	}
	pc.Checksum = func(path string) ([]byte, error) { return policy.ManifestSum(filepath.Base(path)) }
	if first, last := cfg.PluginMetricsPorts[0], cfg.PluginMetricsPorts[1]; first > 0 {
		var mu sync.Mutex
		ports := map[string]int{}
		pc.MetricsAddr = func(name, version string) string {
			mu.Lock()
			defer mu.Unlock()
			k := name + "@" + version
			if _, ok := ports[k]; !ok {
				if first+len(ports) > last {
					log.Warn("no metrics port left for a plugin process", "plugin", name, "range", cfg.PluginMetricsPorts)
					return ""
				}
				ports[k] = first + len(ports)
			}
			return fmt.Sprintf("127.0.0.1:%d", ports[k])
		}
	}
	pc.OnGiveUp = func(c *loader.Candidate, err error) {
		if qerr := store.Quarantine(c.Name, c.Version.String(), c.Path); qerr != nil {
			log.Error("quarantining a plugin version", "plugin", c.Name, "version", c.Version.String(), "err", qerr)
		}
		cache.Forget(c.Name, c.Version.String())
		if err := cache.Save(); err != nil {
			log.Warn("writing the verdict cache", "err", err)
		}
		select {
		case giveUp <- fmt.Sprintf("%s %s quarantined: %v", c.Name, c.Version, err):
		default:
		}
	}
}

// stopServices stops services within ctx, logging what fails.
func stopServices(ctx context.Context, services []Service, log *slog.Logger) {
	for _, s := range services {
		if err := s.Stop(ctx); err != nil {
			log.Warn("stopping a service", "err", err)
		}
	}
}

// waitRestart waits for a change that should restart the daemon: one after
// which cfg.BeforeRestart, if set, agrees. A change it refuses is logged and
// becomes the new baseline, so the next change is asked about again.
func waitRestart(ctx context.Context, w *Watcher, since Fingerprint, cfg Config) (string, error) {
	for {
		why, err := w.Wait(ctx, since)
		if err != nil || cfg.BeforeRestart == nil {
			return why, err
		}
		berr := cfg.BeforeRestart()
		if berr == nil {
			return why, nil
		}
		cfg.Logger.Error("the plugins or the configuration changed, but the new set cannot start: still serving the current one until the next change",
			"change", why, "err", berr)
		if fp, err := TakeFingerprint(cfg.Loader.Dir, cfg.Watch...); err == nil {
			since = fp
		}
	}
}

// Admission is the loader's admit stage as the daemon runs it: the trust
// policy, then the quarantine records. Signatures are checked against the
// candidate's canonical name, <name>_v<version>.so or, for an executable,
// <name>_v<version>.
func Admission(policy *trust.Policy, store *quarantine.Store) func(*loader.Candidate) error {
	return func(c *loader.Candidate) error {
		if err := policy.Check(c.Path, loader.CanonicalName(c.Name, c.Version, c.Backend)); err != nil {
			return err
		}
		return store.Admit(c.Name, c.Version.String(), c.Path)
	}
}

// cleanExit records a clean end of this run and returns result.
func cleanExit(store *quarantine.Store, result error) error {
	if err := store.Clean(); err != nil {
		return errors.Join(result, err)
	}
	return result
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// statusLine says which versions are active, for STATUS= and /readyz.
func statusLine(active []*loader.Candidate, dir string) string {
	if len(active) == 0 {
		return "no acceptable plugin in " + dir + "; waiting for a change"
	}
	var parts []string
	for _, c := range active {
		parts = append(parts, fmt.Sprintf("%s %s", c.Name, c.Version))
	}
	return "serving " + strings.Join(parts, ", ")
}

// logTable logs one record per candidate, the whole table with the versions
// not tried, then the selection's errors.
func logTable(log *slog.Logger, sel *loader.Selection, err error) {
	for _, c := range sel.Candidates {
		attrs := []any{"file", c.File, "verdict", string(c.Verdict)}
		if c.Version != nil {
			attrs = append(attrs, "plugin", c.Name, "version", c.Version.String())
		}
		if c.Kind != "" {
			attrs = append(attrs, "kind", string(c.Kind))
		}
		level := slog.LevelInfo
		if c.Verdict == loader.Rejected {
			level = slog.LevelWarn
			attrs = append(attrs, "stage", string(c.Stage), "reason", loader.Plain(c.Reason))
		}
		log.Log(context.Background(), level, "candidate", attrs...)
	}
	for _, e := range loader.Errors(err) {
		log.Error("plugin selection", "err", e)
	}
	for _, c := range sel.Selected() {
		log.Info("plugin active", "plugin", c.Name, "version", c.Version.String(), "kind", string(c.Kind), "file", c.File)
	}
}
