package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/soplug/soplug/internal/access"
	"github.com/soplug/soplug/internal/daemon"
	"github.com/soplug/soplug/internal/deploy"
	"github.com/soplug/soplug/internal/dirlock"
	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/flagvalue"
	"github.com/soplug/soplug/internal/inflight"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/pluginconf"
	"github.com/soplug/soplug/internal/stagger"
	"github.com/soplug/soplug/internal/transform"
	"github.com/soplug/soplug/loader"
)

// runCmd is "runner run": the daemon. It returns 0 after SIGTERM or SIGINT,
// exitcode.Restart when the plugins changed, 1 on a failure.
func runCmd(ctx context.Context, args []string, stderr io.Writer) int {
	var lf loaderFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	lf.register(fs)
	cfg := daemon.Config{}
	fs.StringVar(&cfg.Listen, "listen", daemon.DefaultListen, "the TCP address to serve on when systemd passes no socket")
	fs.DurationVar(&cfg.Debounce, "debounce", daemon.DefaultDebounce, "the quiet period that ends a burst of changes to the plugins folder")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", daemon.DefaultDrainTimeout, "how long in-flight requests may take on the way out")
	fs.DurationVar(&cfg.MinUptime, "min-uptime", daemon.DefaultMinUptime, "the least time to serve before exiting for a change (negative: none)")
	fs.DurationVar(&cfg.RestartSec, "restart-sec", 0, "the unit's RestartSec=, when positive: under systemd, serve until just before its next restart slot, then exit")
	fs.DurationVar(&cfg.ReadHeaderTimeout, "read-header-timeout", daemon.DefaultReadHeaderTimeout, "how long a client may take to send its request headers")
	fs.DurationVar(&cfg.ReadTimeout, "read-timeout", 0, "how long a client may take to send a whole request, body included, before a 408 (0: --read-header-timeout + 30s)")
	fs.IntVar(&cfg.QuarantineAfter, "quarantine-after", 0, "quarantine a version after this many unclean ends in a row (0: the default, 2)")
	var tf transformFlags
	tf.register(fs)
	var of oplog.ServiceConfig
	var nf natsFlags
	registerNATS(fs, &nf)
	registerOplog(fs, &of)
	var metricsPorts flagvalue.PortRange
	fs.Var(&metricsPorts, "plugin-metrics-ports", "FIRST-LAST: ports on 127.0.0.1 for the plugin processes' own /metrics, one each (empty: none)")
	fs.DurationVar(&cfg.PluginScrapeTimeout, "plugin-scrape-timeout", daemon.DefaultPluginScrapeTimeout, "how long a scrape of /metrics waits for the plugin processes' own")
	backoff := loader.DefaultRestartBackoff
	deaths := flagvalue.DeathLimit{Deaths: loader.DefaultMaxRestarts, Window: loader.DefaultRestartWindow}
	fs.Var(flagvalue.PositiveDuration{D: &backoff}, "plugin-restart-backoff", "the wait before a dead plugin process is started again; it doubles with each death in a row, up to 5s")
	fs.Var(&deaths, "plugin-max-deaths", "N/DURATION: a plugin process that dies more than N times within DURATION is given up: its version is quarantined and the runner restarts onto the next")
	var maxInflight int64
	fs.Int64Var(&maxInflight, "max-inflight-bytes", 0, "the memory all request bodies in flight may hold together, in bytes; past it requests get 503 with Retry-After (0: an eighth of the machine's memory, 256 MiB to 2 GiB)")
	var ac access.Config
	fs.StringVar(&ac.TokensFile, "tokens", "", "a file of bearer tokens with scopes (transform, append, control) that every request but /healthz and /readyz must present (empty: none asked for)")
	fs.StringVar(&ac.CertFile, "tls-cert", "", "serve TLS with this certificate chain (PEM), reloaded when it changes; with --tls-key")
	fs.StringVar(&ac.KeyFile, "tls-key", "", "the TLS certificate's private key (PEM)")
	var staggerDir string
	var staggerTimeout time.Duration
	fs.StringVar(&staggerDir, "stagger-dir", "", "a folder shared by the runners that serve the same socket (systemd's Sockets=): they restart one at a time, each once another serves (empty: a runner alone)")
	fs.DurationVar(&staggerTimeout, "stagger-timeout", stagger.DefaultTimeout, "with --stagger-dir, how long a restart waits for another runner to serve before it goes ahead")
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "the lowest level logged: DEBUG, INFO, WARN or ERROR")
	if !parse(fs, args, stderr) {
		return exitcode.Usage
	}
	if of.HangAfter == 0 {
		of.HangAfter = -1 // "0" on the command line: never, as --hang-after
	}
	if err := nf.check(of.Dir); err != nil {
		fmt.Fprintf(stderr, "runner run: %v\n", err)
		return exitcode.Usage
	}
	budget, err := bodyBudget(maxInflight, tf.maxBody, of.MaxAppend)
	if err != nil {
		fmt.Fprintf(stderr, "runner run: %v\n", err)
		return exitcode.Usage
	}
	tf.budget = budget
	cfg.Loader = lf.config()
	cfg.Loader.Process.RestartBackoff = backoff
	cfg.Loader.Process.MaxRestarts, cfg.Loader.Process.RestartWindow = deaths.Deaths, deaths.Window
	cfg.PluginMetricsPorts = metricsPorts
	cfg.StateDir = lf.stateDir
	policy, err := lf.policy()
	if err != nil {
		fmt.Fprintf(stderr, "runner run: %v\n", err)
		return exitcode.Usage
	}
	cfg.Trust = policy
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if limit := inflight.SetMemoryLimit(budget); limit > 0 {
		cfg.Logger.Debug("go memory limit set", "bytes", limit, "inflight_budget", budget.Limit())
	}
	cfg.Logger.Info("starting", "pid", os.Getpid(), "since_exec", time.Since(daemon.ProcessStart()).Round(time.Millisecond))
	if ac != (access.Config{}) {
		ac.Logger = cfg.Logger
		if cfg.Guard, err = access.New(ac); err != nil {
			cfg.Logger.Error("access", "err", err)
			fmt.Fprintf(stderr, "runner run: %v\n", err)
			return exitcode.Config
		}
	}

	// One live runner owns the state and oplog folders: taken before
	// anything in them is read or written.
	for i, dir := range []string{lf.stateDir, of.Dir} {
		if dir == "" || (i == 1 && filepath.Clean(dir) == filepath.Clean(lf.stateDir)) {
			continue
		}
		lock, err := dirlock.Acquire(dir)
		if errors.Is(err, dirlock.ErrHeld) {
			cfg.Logger.Error("another runner owns a folder of this one", "dir", dir, "err", err)
			fmt.Fprintf(stderr, "runner run: %v\n", err)
			return exitcode.InUse
		} else if err != nil { // read-only, not permitted, not a folder: no runner is to blame
			cfg.Logger.Error("a folder of this runner cannot be used", "dir", dir, "err", err)
			fmt.Fprintf(stderr, "runner run: %v\n", err)
			return exitcode.Failure
		}
		defer lock.Release()
	}
	if staggerDir != "" {
		g, err := stagger.Join(staggerDir, staggerTimeout)
		if err != nil {
			cfg.Logger.Error("the folder of the runners on this socket cannot be used", "dir", staggerDir, "err", err)
			fmt.Fprintf(stderr, "runner run: %v\n", err)
			return exitcode.Failure
		}
		defer g.Close() // the restart lock, held to the end
		cfg.Stagger = g
	}
	if removed, err := deploy.CleanStale(lf.dir); err != nil {
		cfg.Logger.Warn("cleaning up after killed installs", "dir", lf.dir, "err", err)
	} else if len(removed) > 0 {
		cfg.Logger.Info("removed the copies of installs that were killed part-way", "dir", lf.dir, "files", removed)
	}

	conf, err := loadConfig(lf.confFile, lf.dir)
	if err != nil {
		cfg.Logger.Error("configuration", "err", err)
		fmt.Fprintf(stderr, "runner run: %v\n", err)
		if errors.Is(err, pluginconf.ErrSyntax) || errors.Is(err, pluginconf.ErrInvalid) {
			return exitcode.Config
		}
		return exitcode.NoInput
	}
	if lf.confFile != "" {
		cfg.Watch = []string{lf.confFile}
		cfg.BeforeRestart = func() error { _, err := loadConfig(lf.confFile, lf.dir); return err }
	}
	cfg.Services = []daemon.Service{&transform.DaemonService{Conf: conf, Config: tf.config(cfg.Logger)}}
	if of.Dir != "" || nf.urls != "" {
		svc := &oplog.DaemonService{Config: of, StateDir: lf.stateDir, Conf: conf, Log: cfg.Logger, Budget: budget}
		if nf.urls != "" {
			svc.Journal = nf.journal(cfg.Logger)
		}
		cfg.Services = append(cfg.Services, svc)
	}

	err = daemon.Run(ctx, cfg)
	switch {
	case err == nil:
		return exitcode.OK
	case errors.Is(err, daemon.ErrRestart):
		cfg.Logger.Info("exiting for a restart", "status", exitcode.Restart)
		return exitcode.Restart
	}
	cfg.Logger.Error("runner failed", "err", err)
	fmt.Fprintf(stderr, "runner run: %v\n", err)
	if errors.Is(err, pluginconf.ErrInvalid) {
		return exitcode.Config
	}
	return exitcode.Failure
}

// bodyBudget returns the budget of request bodies in flight: limit bytes,
// or with limit 0 the default for this machine. A limit that cannot hold
// the largest single request the flags allow is an error naming the flag.
func bodyBudget(limit, maxBody, maxAppend int64) (*inflight.Budget, error) {
	for _, f := range []struct {
		name string
		v    int64
	}{{"--max-inflight-bytes", limit}, {"--max-body", maxBody}, {"--oplog-max-body", maxAppend}} {
		if f.v < 0 {
			return nil, fmt.Errorf("%s %d: must not be negative", f.name, f.v)
		}
	}
	largest := max(maxBody+transform.Slack, oplog.MaxAppendCost(maxAppend))
	if limit == 0 {
		return inflight.New(inflight.DefaultLimit(inflight.MemTotal(), largest)), nil
	}
	if limit < largest {
		return nil, fmt.Errorf("--max-inflight-bytes %d cannot hold one request of the largest size the other flags allow (%d bytes: --max-body + %d, or what an append of --oplog-max-body may hold, oplog.MaxAppendCost)",
			limit, largest, transform.Slack)
	}
	return inflight.New(limit), nil
}
