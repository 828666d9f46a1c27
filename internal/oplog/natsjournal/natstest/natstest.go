// Package natstest runs real nats-server processes for tests: the binary
// is $SOPLUG_NATS_SERVER, else a nats-server of Version on PATH, else one
// built once with go install from the module proxy into the user's cache.
package natstest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// T is what natstest needs of a test (a *testing.T, or a benchmark
// program's stand-in).
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// Version is the nats-server the tests run.
const Version = "v2.15.3"

// MaxPayload is the servers' max_payload: 32 MiB.
const MaxPayload = 32 << 20

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of a nats-server of Version, building it when
// none is found; the test fails when it cannot.
func Binary(t T) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = find() })
	if binErr != nil {
		t.Fatalf("natstest: no nats-server %s: %v", Version, binErr)
	}
	return binPath
}

func find() (string, error) {
	if p := os.Getenv("SOPLUG_NATS_SERVER"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		if out, err := exec.Command(p, "--version").Output(); err == nil && strings.Contains(string(out), Version) {
			return p, nil
		}
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "soplug", "nats-server-"+Version)
	bin := filepath.Join(dir, "nats-server")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// One build at a time across test processes.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.Command("go", "install", "github.com/nats-io/nats-server/v2@"+Version)
	cmd.Dir = dir // outside any module: the server's own go.mod decides its dependencies
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install nats-server: %v\n%s", err, out)
	}
	return bin, nil
}

// Server is a running nats-server with JetStream.
type Server struct {
	// URL is its client URL.
	URL string
	cmd *exec.Cmd
}

// Start starts a single nats-server with JetStream on a free loopback
// port, its store in a temporary folder, and stops it (kill -9) at the
// test's end.
func Start(t T) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// Options configure a server. The zero value is Start's.
type Options struct {
	// MaxPayload is its max_payload; zero means MaxPayload.
	MaxPayload int
	// Config is more of its configuration file (an authorization block,
	// say), appended to what Start writes.
	Config string
}

// StartWith is Start with opts.
func StartWith(t T, opts Options) *Server {
	t.Helper()
	if opts.MaxPayload == 0 {
		opts.MaxPayload = MaxPayload
	}
	bin := Binary(t)
	dir := t.TempDir()
	// max_payload: the largest oplog entry (16 MiB of payload) fits in one
	// message, as the README asks of a production server.
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listen: \"127.0.0.1:-1\"\nmax_payload: %d\njetstream { store_dir: %q }\n%s\n",
		opts.MaxPayload, filepath.Join(dir, "store"), opts.Config), 0o644); err != nil {
		t.Fatalf("natstest: %v", err)
	}
	cmd := exec.Command(bin, "-c", conf, "--ports_file_dir", dir)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		t.Fatalf("natstest: starting nats-server: %v", err)
	}
	s := &Server{cmd: cmd}
	t.Cleanup(s.Kill)
	ports := filepath.Join(dir, fmt.Sprintf("%s_%d.ports", filepath.Base(bin), cmd.Process.Pid))
	deadline := time.Now().Add(30 * time.Second)
	for {
		if data, err := os.ReadFile(ports); err == nil {
			var p struct {
				Nats []string `json:"nats"`
			}
			if json.Unmarshal(data, &p) == nil && len(p.Nats) > 0 {
				s.URL = p.Nats[0]
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: nats-server wrote no ports file in 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		nc, err := nats.Connect(s.URL)
		if err == nil {
			nc.Close()
			return s
		}
		if errors.Is(err, nats.ErrAuthorization) {
			return s // up, and asking for credentials
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: nats-server at %s: %v", s.URL, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Connect returns a connection to s, closed at the test's end.
func (s *Server) Connect(t T) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("natstest: connecting to %s: %v", s.URL, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Kill kills the server with SIGKILL and waits for it.
func (s *Server) Kill() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}
