package main

import (
	"context"
	"flag"
	"io"
	"log/slog"

	"github.com/soplug/soplug/loader"
)

// runCmd is "runner run": it selects and loads the plugins, logs the
// candidate table, and holds them until ctx ends (SIGTERM or SIGINT).
func runCmd(ctx context.Context, args []string, stderr io.Writer) int {
	var lf loaderFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	lf.register(fs)
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "the lowest level logged: DEBUG, INFO, WARN or ERROR")
	if !parse(fs, args, stderr) {
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg := lf.config()
	cfg.Logger = log
	log.Info("selecting plugins", "dir", cfg.Dir)
	sel, err := loader.New(cfg).Load(ctx)
	logTable(log, sel)
	for _, e := range unwrapJoined(err) {
		log.Error("plugin selection", "err", e)
	}
	active := sel.Selected()
	if len(active) == 0 {
		log.Error("no plugin could be selected; stopping", "dir", cfg.Dir)
		if code := exitFor(err); code != exitOK {
			return code
		}
		return exitNoPlugin
	}
	for _, c := range active {
		log.Info("plugin active", "plugin", c.Name, "version", c.Version.String(), "kind", string(c.Kind), "file", c.File)
	}
	log.Info("running", "active", len(active))
	<-ctx.Done()
	log.Info("stopping", "cause", context.Cause(ctx))
	return exitOK
}

// logTable logs one record per candidate: the whole table, not tried
// versions included.
func logTable(log *slog.Logger, sel *loader.Selection) {
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
			attrs = append(attrs, "stage", string(c.Stage), "reason", reason(c))
		}
		log.Log(context.Background(), level, "candidate", attrs...)
	}
}
