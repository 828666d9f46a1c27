package natsjournal_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/natsjournal"
	"github.com/soplug/soplug/internal/oplog/natsjournal/natstest"
)

// proxy forwards TCP connections to a server until it is cut: then it
// closes them and every new one, until it is restored.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cut {
				p.mu.Unlock()
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// TestPartitionedRunner: runner a, cut off from the cluster in the middle
// of a batch, keeps running; b takes the worker once a's lease lapses and
// delivers it, a's batch again flagged. When a's processor returns and its
// connection comes back, a acknowledges nothing and delivers nothing more
// of the worker: no entry is delivered twice unflagged.
func TestPartitionedRunner(t *testing.T) {
	srv := natstest.Start(t)
	px := newProxy(t, strings.TrimPrefix(srv.URL, "nats://"))
	ctx := context.Background()
	f := &fleet{seen: map[string][]delivery{}}

	nc, err := nats.Connect(px.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	ja, err := natsjournal.New(ctx, nc, natsjournal.Config{Owner: "a", LeaseTTL: time.Second, Timeout: time.Second})
	require.NoError(t, err)
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	pa := &proc{f: f, runner: "a", block: func(contract.Batch) { once.Do(func() { close(held); <-release }) }}
	da, err := oplog.NewDeliverer(oplog.Config{Journal: ja, BatchSize: 10, MinBackoff: 50 * time.Millisecond}, "fleet", "1.0.0", pa)
	require.NoError(t, err)
	stop, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- da.Run(stop, ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	writer := mustJournal(t, srv, "writer")
	appendN(t, writer, "x", 1, 25)
	<-held
	px.setCut(true) // a is cut off with the batch in hand

	_, _ = runner(t, srv, "b", time.Second, &proc{f: f, runner: "b"})
	waitFor(t, "b delivers x", func() bool { return f.count("x") == 25 })

	close(release)                     // a's processor returns, cut off
	time.Sleep(300 * time.Millisecond) // a tries to acknowledge
	px.setCut(false)                   // and its connection comes back
	waitFor(t, "a sees x leased to b", func() bool {
		for _, st := range da.Status() {
			if st.Worker == "x" {
				return st.State == oplog.StateLeased && st.Owner == "b"
			}
		}
		return false
	})
	appendN(t, writer, "x", 26, 10)
	waitFor(t, "the new entries", func() bool { return f.count("x") == 35 })
	time.Sleep(300 * time.Millisecond)
	for _, d := range f.check(t, "x", 35) {
		if d.runner == "a" {
			assert.LessOrEqual(t, d.index, uint64(10), "a delivered only the batch it held when cut off")
		}
	}
}
