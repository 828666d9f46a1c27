package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soplug/soplug/internal/quarantine"
	"github.com/soplug/soplug/internal/trust"
	"github.com/soplug/soplug/loader"
)

// life is what the stages of one Run share.
type life struct {
	cfg    Config
	log    *slog.Logger
	start  time.Time
	store  *quarantine.Store
	policy *trust.Policy
	watch  *Watcher
	fp     Fingerprint
	lns    []net.Listener
	sel    *loader.Selection
	lcfg   loader.Config // the selection's, for the prepare stage
	cache  *loader.Cache // nil without a state directory
	health *health
	http   *server
	giveUp chan string   // a plugin process died too often
	spare  *loader.Spare // the prepare stage's probe child, started after ready

	specMu   sync.Mutex
	spec     *speculation // the prepare stage begun during a debounce, if any
	specOver bool         // no more: the process is on its way out
	// restarting is set once a restart is decided: no spare child then.
	restarting atomic.Bool
}

// speculation is a prepare stage begun at the first event of a burst,
// while the debounce runs.
type speculation struct {
	done   chan struct{}
	events uint64 // the watcher's count when it began
	start  time.Time
	prep   prepared
}

// record opens the quarantine records: the versions the previous run
// loaded are blamed, by the evidence it left, when it ended uncleanly.
// Then the Go runtime's crash output of this run goes to the state
// directory's quarantine.CrashFile (besides stderr), with every
// goroutine's stack, for the next run's blame.
func (l *life) record() error {
	l.store = &quarantine.Store{Dir: l.cfg.StateDir, Threshold: l.cfg.QuarantineAfter}
	end, err := l.store.Begin()
	if err != nil {
		return err
	}
	if l.cfg.StateDir != "" {
		l.cache = loader.OpenCache(filepath.Join(l.cfg.StateDir, CacheFile), loader.RunnerBuild(), l.log)
	}
	if end.Unreadable != "" {
		l.log.Warn("the previous run's record was cut short", "reason", end.Unreadable)
	}
	if end.Unclean {
		attrs := []any{"crash_output", end.Crash, "blamed", len(end.Blamed)}
		if end.Stop != nil {
			attrs = append(attrs, "systemd", end.Stop.String())
		}
		l.log.Warn("the previous run ended uncleanly", attrs...)
	}
	for _, r := range end.Blamed {
		l.log.Warn("the previous run ended uncleanly with this version loaded", "plugin", r.Name, "version", r.Version,
			"crashes", r.Crashes, "quarantined", l.store.Quarantines(r), "evidence", r.Evidence)
		l.cache.Forget(r.Name, r.Version) // probed again, not trusted from before
	}
	if l.cfg.StateDir != "" {
		return crashOutput(filepath.Join(l.cfg.StateDir, quarantine.CrashFile))
	}
	return nil
}

// crashOutput sends the runtime's crash output to the file at path,
// emptied (the previous run's was read by Begin), with all goroutines.
func crashOutput(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("daemon: the crash output file: %w", err)
	}
	defer f.Close() // SetCrashOutput keeps its own descriptor
	debug.SetTraceback("all")
	if err := debug.SetCrashOutput(f, debug.CrashOptions{}); err != nil {
		return fmt.Errorf("daemon: the crash output file %s: %w", path, err)
	}
	return nil
}

// watchAndListen watches the folder, takes its fingerprint, and opens the
// listeners. The watch comes before the fingerprint, and the fingerprint
// before the selection, so that no change can fall between what was
// selected and what is watched.
func (l *life) watchAndListen() error {
	dir := l.cfg.Loader.Dir
	w, err := NewWatcher(dir, l.cfg.Debounce, l.cfg.Watch...)
	if err != nil {
		return err
	}
	if l.fp, err = TakeFingerprint(dir, l.cfg.Watch...); err != nil {
		w.Close()
		return err
	}
	lns, source, err := listeners(l.cfg.Listen)
	if err != nil {
		w.Close()
		return err
	}
	l.watch, l.lns = w, lns
	var addrs []string
	for _, ln := range lns {
		addrs = append(addrs, ln.Addr().String())
	}
	l.log.Info("listening", "addrs", addrs, "from", source)
	return nil
}

// selectPlugins selects and loads the plugins, each candidate admitted by
// the trust policy and the quarantine records, and logs the table. Only a
// failure to select at all is an error: names with no acceptable version
// leave the daemon serving the others.
func (l *life) selectPlugins(ctx context.Context) error {
	dir := l.cfg.Loader.Dir
	lcfg := l.cfg.Loader
	if lcfg.Logger == nil {
		lcfg.Logger = l.log
	}
	l.policy = l.cfg.Trust
	if l.policy == nil {
		l.policy = &trust.Policy{}
	}
	if l.policy.InsecurePermissions {
		l.log.Warn("INSECURE: plugin files are not checked for owner and mode; anyone who can write the plugins folder can run code as this service",
			"dir", dir)
	}
	lcfg.Admit = Admission(l.policy, l.store)
	lcfg.Cache = l.cache
	processes(&lcfg.Process, l.cfg, l.policy, l.store, l.cache, l.log, l.giveUp)
	l.spare = &loader.Spare{}
	l.lcfg = lcfg
	l.lcfg.Prober.Spare = l.spare // the start's own probes, below, start their own children
	lcfg.BeforeLoad = func(c *loader.Candidate) error {
		return l.store.Loading(c.Name, c.Version.String(), c.Path, c.PluginPath())
	}
	l.log.Info("selecting plugins", "dir", dir)
	sel, err := loader.New(lcfg).Load(ctx)
	l.sel = sel
	l.saveCache()
	if ctx.Err() != nil {
		return nil
	}
	logTable(l.log, sel, err)
	if err != nil && !errors.Is(err, loader.ErrNoAcceptable) && !errors.Is(err, loader.ErrNoCandidates) {
		return err
	}
	return nil
}

// startServices builds the mux (health, metrics, discovery, and each
// service's routes) and serves it on the listeners.
func (l *life) startServices(ctx context.Context) error {
	l.health = newHealth()
	l.health.setSelection(l.sel)
	mux := http.NewServeMux()
	l.health.register(mux)
	reg := newMetrics(l.sel)
	plugins, err := newPluginGatherer(l.sel, l.cfg.PluginScrapeTimeout, reg, l.log)
	if err != nil {
		return err
	}
	mux.Handle("GET /metrics", metricsHandler(reg, plugins))
	mux.Handle("GET /v1/discovery", discoveryHandler(l.sel))
	for i, s := range l.cfg.Services {
		if cc, ok := s.(CallCounter); ok {
			cc.CountCalls(l.store.Mark)
		}
		if err := s.Start(ctx, l.sel, mux, reg); err != nil {
			stopServices(context.WithoutCancel(ctx), l.cfg.Services[:i], l.log)
			return err
		}
		if r, ok := s.(Reporter); ok {
			l.health.addReporter(r)
		}
	}
	reg.MustRegister(l.cfg.Guard.Collectors()...)
	srv := &http.Server{
		Handler:           refuseSmuggling(l.cfg.Guard.Handler(mux)),
		ConnContext:       framingContext,
		ReadHeaderTimeout: l.cfg.ReadHeaderTimeout,
		ReadTimeout:       l.cfg.ReadTimeout,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelWarn),
	}
	// The framing is followed above TLS, where the requests are plain.
	tc := l.cfg.Guard.TLSConfig()
	lns := make([]net.Listener, len(l.lns))
	for i, ln := range l.lns {
		if tc != nil {
			ln = tls.NewListener(ln, tc)
		}
		lns[i] = framingListener{ln}
	}
	l.http = newServer(srv, lns)
	l.http.start()
	return nil
}

// ready tells systemd and the health endpoints what is served, and, when
// that is some plugin, the runners of its group that this one serves, once
// it has served MinUptime: a new set that crashes its process soon after
// the load takes one runner down, while the others keep serving the set
// before it.
func (l *life) ready() {
	active := l.sel.Selected()
	status := statusLine(active, l.cfg.Loader.Dir)
	l.health.set(len(active) > 0, status)
	notify(l.log, "READY=1\nSTATUS="+status)
	l.log.Info("ready", "status", status, "startup", time.Since(l.start).Round(time.Millisecond))
	if len(active) == 0 {
		return // not ready: the others of its group do not count on it
	}
	l.cfg.Stagger.ServeAfter(max(l.cfg.MinUptime-time.Since(l.start), 0), func(err error) {
		if err != nil {
			l.log.Warn("the runners of this socket will not see this one serve: they restart without waiting for it", "err", err)
			return
		}
		l.log.Info("serving for the other runners of this socket", "uptime", time.Since(l.start).Round(time.Millisecond))
	})
}

// leave waits, with a group of runners on one socket, until this one may
// exit for a restart: none other restarting, another serving.
func (l *life) leave(ctx context.Context) {
	if l.cfg.Stagger == nil {
		return
	}
	waited, err := l.cfg.Stagger.Leave(ctx)
	switch {
	case ctx.Err() != nil:
	case err != nil:
		l.log.Warn("restarting with no other runner serving this socket: its connections wait for this one", "waited", waited.Round(time.Millisecond), "err", err)
	default:
		l.log.Info("another runner serves this socket; restarting", "waited", waited.Round(time.Millisecond))
	}
}

// wait serves until ctx ends (nil), the folder or configuration changes or
// a plugin process is given up (ErrRestart), or serving fails.
func (l *life) wait(ctx context.Context) error {
	changed := make(chan string, 1)
	l.watch.OnBurst(func() { l.speculate(ctx) })
	defer l.awaitSpeculation() // on every way out: its probes end with it
	go func() {
		why, err := waitRestart(ctx, l.watch, l.fp, l.cfg)
		if err == nil {
			changed <- why
		}
	}()
	select {
	case <-ctx.Done():
		l.log.Info("stopping", "cause", context.Cause(ctx))
		return nil
	case why := <-changed:
		l.log.Info("plugins folder changed; restarting onto the new set", "change", why)
		l.restarting.Store(true)
		l.unwatch()
		l.prepare(ctx)
		if wait := l.cfg.MinUptime - time.Since(l.start); wait > 0 {
			l.log.Info("holding the restart until the minimum uptime", "wait", wait.Round(time.Millisecond))
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
		return l.restart(ctx, why)
	case why := <-l.giveUp:
		l.log.Error("restarting onto the next acceptable version", "cause", why)
		l.restarting.Store(true)
		l.unwatch()
		return l.restart(ctx, why)
	case err := <-l.http.errs:
		return fmt.Errorf("daemon: serving: %w", err)
	}
}

// restart waits until this runner may exit for a restart (its group's
// turn, systemd's restart slot) and returns ErrRestart with why; nil when
// ctx ends meanwhile, a stop like any other.
func (l *life) restart(ctx context.Context, why string) error {
	l.leave(ctx)
	l.alignExit(ctx)
	if ctx.Err() != nil {
		l.log.Info("stopping before the restart", "cause", context.Cause(ctx))
		return nil
	}
	return fmt.Errorf("%w: %s", ErrRestart, why)
}

// SpareAfter is how long after ready the daemon starts the probe child
// that its next prepare stage will take (loader.Spare): not at once, when
// the connections that waited out the restart are being answered.
const SpareAfter = time.Second

// fillSpare starts the spare probe child SpareAfter from now, when there
// is a prepare stage to use it, and returns a stop for the timer.
func (l *life) fillSpare() (stop func() bool) {
	if l.cache == nil {
		return func() bool { return false }
	}
	return time.AfterFunc(SpareAfter, l.fill).Stop
}

// fillSpareLater starts a spare probe child again SpareAfter from now,
// unless a restart has been decided by then: a prepare stage begun during
// a debounce took it, and the burst may end with no change to restart on.
func (l *life) fillSpareLater() {
	time.AfterFunc(SpareAfter, func() {
		if !l.restarting.Load() {
			l.fill()
		}
	})
}

// fill starts the spare probe child, logging a failure, and reads what
// the prepare stage's build check needs from this executable (loader.Warm),
// which every drop's prepare stage would read first: each drop is the first
// change a process sees.
func (l *life) fill() {
	if err := loader.Warm(); err != nil {
		l.log.Debug("the build check cannot read this executable", "err", err)
	}
	if err := l.spare.Fill(l.lcfg.Prober); err != nil {
		l.log.Warn("starting a spare probe child: the next change starts its own", "err", err)
		return
	}
	l.log.Debug("a spare probe child waits for the next change")
}

// unwatch closes the watcher once a restart is decided, in the background:
// the next process reads the folder as it then is, so no later change is
// missed. Closing an inotify instance waits in the kernel for its marks to
// be destroyed (an SRCU grace period): 12 to 17 ms measured here, which the
// exit would otherwise spend between the drain and the process's end, with
// the socket unserved. Run's deferred Close then returns at once.
func (l *life) unwatch() {
	go l.watch.Close()
}

// speculate begins the prepare stage at the first event of a burst, in
// the background, while the debounce runs: a drop by rename is whole when
// its event arrives, so the check and probe of the new file need not wait
// for the quiet period. Its verdicts only fill the cache, which keys them
// by the file's identity and content, so a burst that goes on, or ends
// with no change, wastes the work and nothing else. One runs at a time.
func (l *life) speculate(ctx context.Context) {
	if l.cache == nil {
		return
	}
	l.specMu.Lock()
	defer l.specMu.Unlock()
	if l.specOver {
		return
	}
	if l.spec != nil {
		select {
		case <-l.spec.done:
		default:
			return // prepare sees the later events and checks again
		}
	}
	s := &speculation{done: make(chan struct{}), events: l.watch.Events(), start: time.Now()}
	l.spec = s
	go func() {
		defer close(s.done)
		s.prep = l.check(ctx)
		if !l.spare.Ready() {
			l.fillSpareLater()
		}
	}()
}

// awaitSpeculation waits for a prepare stage begun during a debounce.
func (l *life) awaitSpeculation() {
	l.specMu.Lock()
	s := l.spec
	l.specOver = true
	l.specMu.Unlock()
	if s != nil {
		<-s.done
	}
}

// prepare checks and probes the new set while this process still serves,
// in child processes as at start, and writes the verdicts to the cache:
// the next process takes them from there and probes only what no cache
// may hold. A prepare stage begun during the debounce (speculate) counts
// when no event came after it began; otherwise the set is checked again,
// from the cache where the files did not change. Without a state
// directory there is no cache, and nothing to prepare.
func (l *life) prepare(ctx context.Context) {
	if l.cache == nil {
		return
	}
	l.specMu.Lock()
	s := l.spec
	l.specMu.Unlock()
	if s != nil {
		<-s.done
		if l.watch.Events() == s.events {
			l.logPrepared(s.prep, s.start, true)
			return
		}
	}
	start := time.Now()
	l.logPrepared(l.check(ctx), start, false)
}

// prepared is what one check of the new set found.
type prepared struct {
	selected, hits, misses, errors int
	spare                          bool
}

// check checks and probes the folder's set as the next process will
// find it, and saves the verdicts.
func (l *life) check(ctx context.Context) prepared {
	hits, misses := l.cache.Hits(), l.cache.Misses()
	p := prepared{spare: l.spare.Ready()}
	sel, err := loader.New(l.lcfg).Check(ctx)
	l.saveCache()
	p.selected, p.errors = len(sel.Selected()), len(loader.Errors(err))
	p.hits, p.misses = int(l.cache.Hits()-hits), int(l.cache.Misses()-misses)
	return p
}

// logPrepared logs a prepare stage, begun at start.
func (l *life) logPrepared(p prepared, start time.Time, speculative bool) {
	l.log.Info("prepared the new selection", "took", time.Since(start).Round(time.Millisecond),
		"selected", p.selected, "from_cache", p.hits, "checked", p.misses,
		"errors", p.errors, "spare_probe", p.spare, "during_debounce", speculative)
}

// saveCache writes the verdict cache, logging a failure: the next
// selection then probes again.
func (l *life) saveCache() {
	if err := l.cache.Save(); err != nil {
		l.log.Warn("writing the verdict cache", "err", err)
	}
}

// drain stops accepting, tells systemd, lets the requests in flight
// finish within DrainTimeout, and stops the services.
func (l *life) drain(ctx context.Context, result error) {
	status := "stopping"
	if errors.Is(result, ErrRestart) {
		status = "restarting: plugins changed"
	}
	l.health.set(false, status)
	l.cfg.Stagger.Unserve()
	for _, s := range l.cfg.Services {
		s.Drain()
	}
	notify(l.log, "STOPPING=1\nSTATUS="+status)
	l.log.Info("closing the listeners", "status", status)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.DrainTimeout)
	defer cancel()
	if err := l.http.drain(dctx); err != nil {
		l.log.Warn("drain did not finish", "timeout", l.cfg.DrainTimeout, "err", err)
	}
	stopServices(dctx, l.cfg.Services, l.log)
}
