package natstest

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Failover times how loops of appends recover from the kill of a stream's
// leader: each loop's Recovery keeps the first success of an attempt sent
// after the kill. The zero value is ready; KillStreamLeader starts the
// clock.
type Failover struct {
	killed atomic.Int64 // UnixNano; 0 before the kill
}

// Recovery is one loop's record in a Failover.
type Recovery struct {
	f     *Failover
	first atomic.Int64 // UnixNano of the first success after the kill
}

// Loop returns a Recovery for one loop of attempts.
func (f *Failover) Loop() *Recovery { return &Recovery{f: f} }

// Succeeded records that an attempt sent at sent succeeded. Attempts sent
// before the kill do not count, even when answered after it.
func (r *Recovery) Succeeded(sent time.Time) {
	if k := r.f.killed.Load(); k != 0 && sent.UnixNano() > k {
		r.first.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// After returns the time from the kill to the loop's first success, and
// whether there was one.
func (r *Recovery) After() (time.Duration, bool) {
	f := r.first.Load()
	return time.Duration(f - r.f.killed.Load()), f != 0
}

// KillStreamLeader kills the node that leads stream with SIGKILL, starts
// f's clock, and returns the node's name.
func (c *Cluster) KillStreamLeader(ctx context.Context, js jetstream.JetStream, stream string, f *Failover) (string, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", fmt.Errorf("natstest: stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("natstest: stream %s: %w", stream, err)
	}
	var leader *Node
	if info.Cluster != nil {
		for _, n := range c.Nodes {
			if n.Name == info.Cluster.Leader {
				leader = n
			}
		}
	}
	if leader == nil {
		return "", fmt.Errorf("natstest: stream %s has no leader among the nodes: %+v", stream, info.Cluster)
	}
	c.Kill(leader)
	f.killed.Store(time.Now().UnixNano())
	return leader.Name, nil
}

// Wait waits until every loop has succeeded after the kill, or ctx ends.
func (f *Failover) Wait(ctx context.Context, loops ...*Recovery) error {
	for _, r := range loops {
		for {
			if _, ok := r.After(); ok {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("natstest: no success after the kill: %w", ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

// PublishLoop publishes to subject with js, one message at a time, each
// bounded by timeout, until ctx ends, recording its successes in r: the
// bare nats.go publisher that appends are measured beside.
func PublishLoop(ctx context.Context, js jetstream.JetStream, subject string, timeout time.Duration, r *Recovery) {
	for ctx.Err() == nil {
		sent := time.Now()
		pctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := js.Publish(pctx, subject, []byte("x"))
		cancel()
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		r.Succeeded(sent)
	}
}
