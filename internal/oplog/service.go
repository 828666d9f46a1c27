package oplog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/inflight"
	"github.com/soplug/soplug/internal/pluginconf"
	"github.com/soplug/soplug/internal/quarantine"
	"github.com/soplug/soplug/loader"
)

// ServiceConfig configures a DaemonService: the oplog folder, delivery,
// the control socket and the appender. Zero values are the package's
// defaults.
type ServiceConfig struct {
	// Dir is the workers' oplog folder.
	Dir string
	// Batch, CommitEvery, Parallel and ParkAfter are Config's
	// BatchSize, CommitEvery, Parallel and ParkAfter.
	Batch, CommitEvery, Parallel, ParkAfter int
	// HangAfter is Config's HangAfter.
	HangAfter time.Duration
	// Control is the control socket's path (see ControlPath).
	Control string
	// MaxAppend is AppenderConfig's MaxBytes; MaxOpen and Sync are
	// FileJournalConfig's MaxOpen and Sync.
	MaxAppend int64
	MaxOpen   int
	Sync      SyncMode
}

// ControlPath returns the oplog control socket's path: explicit when it is
// given, else control.sock in the state directory, else .control.sock in
// the oplog folder; "" when none is given.
func ControlPath(explicit, stateDir, oplogDir string) string {
	switch {
	case explicit != "":
		return explicit
	case stateDir != "":
		return filepath.Join(stateDir, "control.sock")
	case oplogDir != "":
		return filepath.Join(oplogDir, ".control.sock")
	}
	return ""
}

// DaemonService appends workers' entries and delivers them to every selected
// OplogProcessor: a daemon.Service. Fill in its exported fields; the zero
// values of ServiceConfig's are the oplog package's defaults.
type DaemonService struct {
	// Config is the folder, delivery and appender settings.
	Config ServiceConfig
	// StateDir keeps the cursors and the pause set (in oplog/); empty
	// means in the oplog folder (.cursors/).
	StateDir string
	// Conf gives each processor its Init configuration.
	Conf *pluginconf.File
	// Log receives the service's log.
	Log *slog.Logger
	// Budget bounds the append bodies in flight, with the other services'.
	Budget *inflight.Budget
	// Journal, when set, opens the journal the service appends to and
	// delivers from, in place of a FileJournal on Config.Dir, with what
	// closes it at Stop; the processors' cursors are then the journal's
	// own (Journal.Cursors). Nil means the FileJournal.
	Journal func(ctx context.Context) (Journal, func() error, error)

	journal      Journal
	closeJournal func() error
	endPauses    context.CancelFunc // ends a shared pause set's watch
	control      *Control
	procs        []contract.OplogProcessor
	ctlSrv       *http.Server
	stop         context.CancelFunc // ends delivery: no new batches
	endProc      context.CancelFunc // ends the batches in flight
	running      sync.WaitGroup
	delivering   atomic.Pointer[[]*Deliverer] // once Start made them, for Stuck
	marks        quarantine.MarkFunc
}

// CountCalls has Start give each processor's delivery its count of
// Process calls in flight (daemon.CallCounter).
func (o *DaemonService) CountCalls(mark quarantine.MarkFunc) { o.marks = mark }

// Stuck reports a Process call that has run longer than HangAfter (see
// Config.HangAfter): the daemon stops feeding the watchdog for it.
func (o *DaemonService) Stuck() (string, bool) {
	if ds := o.delivering.Load(); ds != nil {
		for _, d := range *ds {
			if what, ok := d.Stuck(); ok {
				return what, true
			}
		}
	}
	return "", false
}

// cursorRoot is where the processors' cursors and the pause set live.
func (o *DaemonService) cursorRoot() string {
	if o.StateDir != "" {
		return filepath.Join(o.StateDir, "oplog")
	}
	return filepath.Join(o.Config.Dir, ".cursors")
}

// Start opens the oplog folder for appends, starts a delivery to each
// selected OplogProcessor (after its Init with its configuration), and
// listens on the control socket.
func (o *DaemonService) Start(ctx context.Context, sel *loader.Selection, mux *http.ServeMux, reg prometheus.Registerer) (err error) {
	defer func() {
		if err != nil {
			_ = o.Stop(context.WithoutCancel(ctx)) // what started before the error
		}
	}()
	m, err := NewMetrics(reg)
	if err != nil {
		return err
	}
	// One journal for the appender and the deliveries: its commits bound
	// their reads.
	if o.Journal != nil {
		if o.journal, o.closeJournal, err = o.Journal(ctx); err != nil {
			return err
		}
	} else {
		fj := NewFileJournal(FileJournalConfig{Dir: o.Config.Dir, CursorDir: o.cursorRoot(),
			MaxOpen: o.Config.MaxOpen, Sync: o.Config.Sync, Parallel: o.Config.Parallel, Logger: o.Log})
		o.journal, o.closeJournal = fj, fj.Close
	}
	var pauses *PauseSet
	if store, ok := o.journal.(PauseStore); ok { // shared by every runner on the journal
		watch, cancel := context.WithCancel(context.WithoutCancel(ctx))
		o.endPauses = cancel
		pauses, err = SharedPauseSet(watch, store)
	} else {
		pauses, err = OpenPauseSet(filepath.Join(o.cursorRoot(), "paused.json"))
	}
	if err != nil {
		return err
	}
	o.control = &Control{Dir: o.Config.Dir, Paused: pauses, Journal: o.journal}
	stop, cancel := context.WithCancel(context.WithoutCancel(ctx))
	procCtx, endProc := context.WithCancel(context.WithoutCancel(ctx))
	o.stop, o.endProc = cancel, endProc
	for _, c := range sel.Selected() {
		p, ok := c.Plugin.(contract.OplogProcessor)
		if !ok {
			continue
		}
		if err := p.Init(ctx, o.Conf.For(c.Name).Config); err != nil {
			return fmt.Errorf("oplog: %s %s: Init: %w", c.Name, c.Version, err)
		}
		o.procs = append(o.procs, p)
		d, err := NewDeliverer(Config{
			Journal:   o.journal,
			BatchSize: o.Config.Batch, CommitEvery: o.Config.CommitEvery, Parallel: o.Config.Parallel, ParkAfter: o.Config.ParkAfter, HangAfter: o.Config.HangAfter,
			Paused: pauses, Metrics: m, Logger: o.Log, Mark: o.marks.For(c.Name, c.Version.String()),
		}, c.Name, c.Version.String(), p)
		if err != nil {
			return err
		}
		o.control.Deliverers = append(o.control.Deliverers, d)
		o.running.Go(func() {
			if err := d.Run(stop, procCtx); err != nil {
				o.Log.Error("oplog delivery stopped", "processor", c.Name, "err", err)
			}
		})
		o.Log.Info("oplog delivery started", "processor", c.Name, "version", c.Version.String(), "dir", o.Config.Dir)
	}
	ds := slices.Clone(o.control.Deliverers)
	o.delivering.Store(&ds)
	mux.Handle("POST /v1/workers/{id}/oplog", NewAppender(AppenderConfig{Journal: o.journal,
		MaxBytes: o.Config.MaxAppend, Budget: o.Budget, Metrics: m, Logger: o.Log}))
	o.control.Register(mux, false)
	return o.listenControl()
}

// listenControl serves the control endpoints on a unix socket only the
// service's user can reach.
func (o *DaemonService) listenControl() error {
	path := ControlPath(o.Config.Control, o.StateDir, o.Config.Dir)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("oplog: control socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("oplog: control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("oplog: control socket: %w", err)
	}
	cmux := http.NewServeMux()
	o.control.Register(cmux, true)
	o.ctlSrv = &http.Server{Handler: cmux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = o.ctlSrv.Serve(ln) }()
	o.Log.Info("oplog control socket", "path", path)
	return nil
}

// Drain starts no new batch.
func (o *DaemonService) Drain() {
	if o.stop != nil {
		o.stop()
	}
}

// Stop waits for the batches in flight (ending them when ctx does), records
// the cursors, closes the processors, the oplogs and the control socket.
func (o *DaemonService) Stop(ctx context.Context) error {
	if o.stop == nil {
		return nil
	}
	o.Drain()
	done := make(chan struct{})
	go func() { o.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		o.endProc()
		<-done
	}
	o.endProc()
	var errs []error
	for _, p := range o.procs {
		errs = append(errs, p.Close(context.WithoutCancel(ctx)))
	}
	if o.endPauses != nil {
		o.endPauses()
	}
	if o.closeJournal != nil {
		errs = append(errs, o.closeJournal())
	}
	if o.ctlSrv != nil {
		errs = append(errs, o.ctlSrv.Close())
	}
	return errors.Join(errs...)
}

// Report is the oplog's state in /v1/health.
func (o *DaemonService) Report() (string, any) { return "oplog", o.control.Status() }
