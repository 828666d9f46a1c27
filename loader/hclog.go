package loader

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"

	hclog "github.com/hashicorp/go-hclog"
)

// newHCLogger returns the hclog.Logger go-plugin logs to, writing into log:
// go-plugin's own records, and each line of the plugin process's stderr
// (which go-plugin reads and names after the executable).
func newHCLogger(log *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "go-plugin",
		Level:      hclog.Debug,
		JSONFormat: true,
		Output:     &hclogWriter{log: log},
	})
}

// hclogWriter turns hclog's JSON lines into slog records. A line of the
// plugin's own output (a sub-logger of go-plugin's) is logged at least at
// INFO, since go-plugin gives a plain line DEBUG.
type hclogWriter struct {
	lines
	log *slog.Logger
}

func (w *hclogWriter) Write(p []byte) (int, error) { return w.split(p, w.record) }

// lines splits what is written into lines.
type lines struct {
	mu   sync.Mutex
	part []byte
}

// split calls fn for each complete line of what has been written so far.
func (l *lines) split(p []byte, fn func(line []byte)) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		fn(l.part[:i])
		l.part = l.part[i+1:]
	}
}

func (w *hclogWriter) record(line []byte) {
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		w.log.Info("plugin process", "line", string(line))
		return
	}
	level := map[string]slog.Level{"trace": slog.LevelDebug - 4, "debug": slog.LevelDebug, "info": slog.LevelInfo,
		"warn": slog.LevelWarn, "error": slog.LevelError}[m["@level"].(string)]
	module, _ := m["@module"].(string)
	msg, _ := m["@message"].(string)
	fromPlugin := strings.Contains(module, ".")
	if fromPlugin && level < slog.LevelInfo {
		level = slog.LevelInfo
	}
	attrs := []any{}
	if fromPlugin {
		attrs = append(attrs, "source", "plugin stderr")
		msg = "plugin: " + msg
	}
	for k, v := range m {
		if !strings.HasPrefix(k, "@") {
			attrs = append(attrs, k, v)
		}
	}
	w.log.Log(context.Background(), level, msg, attrs...)
}

// lineLog logs each line written to it, for a plugin's stdout.
type lineLog struct {
	lines
	log    *slog.Logger
	stream string
}

func (l *lineLog) Write(p []byte) (int, error) {
	return l.split(p, func(line []byte) { l.log.Info("plugin: "+string(line), "source", "plugin "+l.stream) })
}
