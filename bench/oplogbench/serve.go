package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/soplug/soplug/internal/inflight"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/journaltest"
	"github.com/soplug/soplug/internal/oplog/natsjournal"
)

// serverFlags configure a server process.
type serverFlags struct {
	sync     oplog.SyncMode
	budget   int64  // bytes; 0: none
	nats     string // servers of a JetStream journal in place of the folder
	replicas int
	memory   bool // an in-memory journal in place of the folder: the HTTP front end's ceiling
}

// server is a child process serving appends (serve).
type server struct {
	cmd *exec.Cmd
	url string // of /v1/workers/
}

// startServer starts this program as "serve DIR" and waits for its
// address.
func startServer(dir string, f serverFlags) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "-budget", strconv.FormatInt(f.budget, 10), "-sync", f.sync.String()}
	if f.nats != "" {
		args = append(args, "-nats", f.nats, "-replicas", strconv.Itoa(f.replicas))
	}
	if f.memory {
		args = append(args, "-memory")
	}
	cmd := exec.Command(self, append(args, dir)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("the server did not start: %w", err)
	}
	return &server{cmd: cmd, url: "http://" + strings.TrimSpace(line) + "/v1/workers/"}, nil
}

// pid returns the server's process ID.
func (s *server) pid() int { return s.cmd.Process.Pid }

// stop ends the server and waits for it.
func (s *server) stop() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	return s.cmd.Wait()
}

// serve is the server process: the daemon's HTTP appender on a
// FileJournal in dir (or a JetStream journal, or one in memory), with
// the daemon's memory limit for its budget. It prints its address, then
// serves until SIGTERM. OPLOGBENCH_CPU names a CPU profile to write.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	var mode oplog.SyncMode
	fs.TextVar(&mode, "sync", oplog.SyncAuto, "the journal's sync mode")
	budget := fs.Int64("budget", 0, "the budget of append bodies in flight, in bytes (0: none)")
	natsURLs := fs.String("nats", "", "append to a JetStream journal at these servers instead of DIR")
	replicas := fs.Int("replicas", 1, "the JetStream journal's replicas")
	memory := fs.Bool("memory", false, "append to a journal in memory instead of DIR (nothing durable: the ceiling of the HTTP front end)")
	_ = fs.Parse(args)
	if fs.Arg(0) == "" {
		return errors.New("usage: oplogbench serve [-sync MODE] [-budget BYTES] DIR")
	}
	if path := os.Getenv("OPLOGBENCH_CPU"); path != "" && mode == oplog.SyncAuto {
		if *memory {
			path += ".memory" // beside the durable server's, which runs at the same time
		}
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var b *inflight.Budget
	if *budget > 0 {
		b = inflight.New(*budget)
		inflight.SetMemoryLimit(b)
	}
	var j oplog.Journal
	if *memory {
		j = journaltest.NewMemory()
	} else if *natsURLs != "" {
		nc, err := nats.Connect(*natsURLs, nats.MaxReconnects(-1))
		if err != nil {
			return err
		}
		defer nc.Close()
		if j, err = natsjournal.New(context.Background(), nc, natsjournal.Config{Replicas: *replicas}); err != nil {
			return err
		}
	} else {
		fj := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: fs.Arg(0), Sync: mode})
		defer fj.Close()
		j = fj
	}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/workers/{id}/oplog", oplog.NewAppender(oplog.AppenderConfig{Journal: j, Budget: b}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr())
	srv := &http.Server{Handler: mux}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
