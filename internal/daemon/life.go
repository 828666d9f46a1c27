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

// ready tells systemd and the health endpoints what is served.
func (l *life) ready() {
	active := l.sel.Selected()
	status := statusLine(active, l.cfg.Loader.Dir)
	l.health.set(len(active) > 0, status)
	notify(l.log, "READY=1\nSTATUS="+status)
	l.log.Info("ready", "status", status, "startup", time.Since(l.start).Round(time.Millisecond))
}

// wait serves until ctx ends (nil), the folder or configuration changes or
// a plugin process is given up (ErrRestart), or serving fails.
func (l *life) wait(ctx context.Context) error {
	changed := make(chan string, 1)
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
		l.unwatch()
		l.prepare(ctx)
		if wait := l.cfg.MinUptime - time.Since(l.start); wait > 0 {
			l.log.Info("holding the restart until the minimum uptime", "wait", wait.Round(time.Millisecond))
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
		l.alignExit(ctx)
		return fmt.Errorf("%w: %s", ErrRestart, why)
	case why := <-l.giveUp:
		l.log.Error("restarting onto the next acceptable version", "cause", why)
		l.unwatch()
		l.alignExit(ctx)
		return fmt.Errorf("%w: %s", ErrRestart, why)
	case err := <-l.http.errs:
		return fmt.Errorf("daemon: serving: %w", err)
	}
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
	t := time.AfterFunc(SpareAfter, func() {
		if err := l.spare.Fill(l.lcfg.Prober); err != nil {
			l.log.Warn("starting a spare probe child: the next change starts its own", "err", err)
			return
		}
		l.log.Debug("a spare probe child waits for the next change")
	})
	return t.Stop
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

// prepare checks and probes the new set while this process still serves,
// in child processes as at start, and writes the verdicts to the cache:
// the next process takes them from there and probes only what no cache
// may hold. Without a state directory there is no cache, and nothing to
// prepare.
func (l *life) prepare(ctx context.Context) {
	if l.cache == nil {
		return
	}
	start := time.Now()
	hits, misses := l.cache.Hits(), l.cache.Misses()
	spare := l.spare.Ready()
	sel, err := loader.New(l.lcfg).Check(ctx)
	l.saveCache()
	l.log.Info("prepared the new selection", "took", time.Since(start).Round(time.Millisecond),
		"selected", len(sel.Selected()), "from_cache", l.cache.Hits()-hits, "checked", l.cache.Misses()-misses,
		"errors", len(loader.Errors(err)), "spare_probe", spare)
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
