package natsjournal_test

import (
	"context"
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

// runnerPermissions are the README's permissions of a runner's NATS user.
const runnerPermissions = `publish: ["$JS.API.>", "$KV.soplug-cursors.>", "soplug.oplog.>"], subscribe: ["_INBOX.>"]`

// TestPermissions: a runner whose NATS user has the permissions the
// README lists makes the stream and bucket, appends, reads in batches,
// delivers with leases and cursors, and pauses, with no permissions
// violation; one whose user may not publish the batched reads' requests
// gets a read that ends in ErrUnavailable once Config.Timeout has passed,
// and the NATS client's error names the subject.
func TestPermissions(t *testing.T) {
	srv := natstest.StartWith(t, natstest.Options{Config: `authorization {
  users = [
    {user: runner, password: pw, permissions: {` + runnerPermissions + `}}
    {user: nodirect, password: pw, permissions: {publish: {allow: ["$JS.API.>", "$KV.soplug-cursors.>", "soplug.oplog.>"], deny: ["$JS.API.DIRECT.GET.>"]}, subscribe: ["_INBOX.>"]}}
  ]
}`})
	ctx := context.Background()
	connect := func(user string) (*nats.Conn, func() []string) {
		var mu sync.Mutex
		var errs []string
		nc, err := nats.Connect(srv.URL, nats.UserInfo(user, "pw"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			errs = append(errs, err.Error())
			mu.Unlock()
		}))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc, func() []string {
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), errs...)
		}
	}

	nc, errs := connect("runner")
	j, err := natsjournal.New(ctx, nc, natsjournal.Config{})
	require.NoError(t, err)
	for i := range 300 {
		_, err := j.Append(ctx, "w", 0, []contract.Entry{{Index: uint64(i + 1), Kind: "k", Payload: []byte("p")}})
		require.NoError(t, err)
	}
	head, err := j.Head(ctx, "w")
	require.NoError(t, err)
	got, _, err := j.Read(ctx, "w", head, 1000, 1<<20)
	require.NoError(t, err)
	assert.Len(t, got, 300)
	require.NoError(t, j.SetPaused(ctx, "x", true))
	require.NoError(t, j.SetPaused(ctx, "x", false))
	rec := &recorder{seen: map[string][]uint64{}}
	d, err := oplog.NewDeliverer(oplog.Config{Journal: j, BatchSize: 64}, "rec", "1.0.0", rec)
	require.NoError(t, err)
	stop, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(stop, ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for rec.count("w") < 300 {
		require.True(t, time.Now().Before(deadline), "%d of 300 delivered", rec.count("w"))
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	require.NoError(t, <-done)
	assert.Empty(t, errs(), "no permissions violation with the README's permissions")

	nc, errs = connect("nodirect")
	j, err = natsjournal.New(ctx, nc, natsjournal.Config{Timeout: 500 * time.Millisecond})
	require.NoError(t, err)
	_, _, err = j.Read(ctx, "w", head, 1000, 1<<20)
	require.ErrorIs(t, err, oplog.ErrUnavailable)
	assert.Eventually(t, func() bool {
		for _, e := range errs() {
			if strings.Contains(e, "Permissions Violation") && strings.Contains(e, "$JS.API.DIRECT.GET.SOPLUG_OPLOG") {
				return true
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "the client's errors: %v", errs())
}
