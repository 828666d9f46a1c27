package natsjournal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// pausedPrefix begins the keys of paused workers in the bucket: no
// processor's Token begins with "_p", so they never meet a cursor's.
const pausedPrefix = "_paused."

// SetPaused records worker as paused (a key in the bucket) or not (the
// key deleted): an oplog.PauseStore that every runner on the stream
// shares.
func (j *Journal) SetPaused(ctx context.Context, worker string, paused bool) error {
	cctx, cancel := j.ctx(ctx)
	defer cancel()
	key := pausedPrefix + Token(worker)
	var err error
	if paused {
		_, err = j.kv.Put(cctx, key, []byte("1"))
	} else {
		err = j.kv.Delete(cctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			err = nil
		}
	}
	if err != nil {
		return j.unavailable("recording the pause of "+worker, err)
	}
	return nil
}

// WatchPaused calls fn with each paused worker, returns once it has them
// all, and then calls fn with each change until ctx ends.
func (j *Journal) WatchPaused(ctx context.Context, fn func(worker string, paused bool)) error {
	w, err := j.kv.Watch(ctx, pausedPrefix+">")
	if err != nil {
		return j.unavailable("watching the pause set", err)
	}
	ready := make(chan struct{})
	go func() {
		defer w.Stop()
		initial := true
		for e := range w.Updates() {
			if e == nil { // the current values are all given
				if initial {
					initial = false
					close(ready)
				}
				continue
			}
			worker, err := Worker(strings.TrimPrefix(e.Key(), pausedPrefix))
			if err != nil {
				j.cfg.Logger.Warn("a pause key that names no worker", "key", e.Key(), "err", err)
				continue
			}
			fn(worker, e.Operation() == jetstream.KeyValuePut)
		}
	}()
	select {
	case <-ready:
		return nil
	case <-time.After(j.cfg.Timeout):
		return j.unavailable("reading the pause set", fmt.Errorf("no answer within %v", j.cfg.Timeout))
	case <-ctx.Done():
		return ctx.Err()
	}
}
