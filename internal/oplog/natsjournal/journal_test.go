package natsjournal_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/journaltest"
	"github.com/soplug/soplug/internal/oplog/natsjournal"
	"github.com/soplug/soplug/internal/oplog/natsjournal/natstest"
)

// TestConformance runs the journal conformance suite against a real
// nats-server; Reopen is a new Journal (a restarted runner) on the same
// stream.
func TestConformance(t *testing.T) {
	srv := natstest.Start(t)
	n := 0
	open := func(t *testing.T, cfg natsjournal.Config) *natsjournal.Journal {
		j, err := natsjournal.New(context.Background(), srv.Connect(t), cfg)
		require.NoError(t, err)
		return j
	}
	journaltest.Run(t, journaltest.Backend{
		New: func(t *testing.T) oplog.Journal {
			n++ // a stream per case: each starts empty
			return open(t, natsjournal.Config{Stream: "T" + string(rune('A'+n%26)) + itoa(n), Prefix: "t" + itoa(n), Bucket: "c" + itoa(n)})
		},
		Reopen: func(t *testing.T, j oplog.Journal) oplog.Journal {
			return open(t, j.(*natsjournal.Journal).Config())
		},
	})
}

func itoa(n int) string {
	return string(rune('0'+n/100%10)) + string(rune('0'+n/10%10)) + string(rune('0'+n%10))
}

// TestTokens: the worker-ID encoding is one-to-one and reversible, and no
// token holds a subject separator or wildcard.
func TestTokens(t *testing.T) {
	ids := []string{"a", "a.b", "a_b", "a_db", "a__b", "a.", ".a", "_", "__", "._", "_.", "a-b.c_d", "x.y.z"}
	seen := map[string]string{}
	for _, id := range ids {
		tok := natsjournal.Token(id)
		assert.NotContains(t, tok, ".", id)
		if other, ok := seen[tok]; ok {
			t.Errorf("%q and %q share the token %q", id, other, tok)
		}
		seen[tok] = id
		back, err := natsjournal.Worker(tok)
		require.NoError(t, err, id)
		assert.Equal(t, id, back)
	}
	for _, bad := range []string{"a_", "a_x", "_q"} {
		_, err := natsjournal.Worker(bad)
		assert.Error(t, err, bad)
	}
}

// payloadEntries returns n entries of worker from 1 whose payloads, of
// size bytes, are tag repeated.
func payloadEntries(worker string, n, size int, tag byte) []contract.Entry {
	ts := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	out := make([]contract.Entry, n)
	for i := range out {
		out[i] = contract.Entry{WorkerID: worker, Index: uint64(i + 1), Timestamp: ts, Kind: "k", Payload: bytes.Repeat([]byte{tag}, size)}
	}
	return out
}

// TestAtomicBatches: an append larger than the server's max_payload is
// stored as one atomic batch of messages and reads back whole; an entry
// larger than a message is refused, naming it; two runners racing to
// append to one worker never interleave: identical appends are stored
// once, differing ones leave one runner's entries and a conflict for the
// other.
func TestAtomicBatches(t *testing.T) {
	srv := natstest.StartWith(t, natstest.Options{MaxPayload: 64 << 10})
	ctx := context.Background()
	a, err := natsjournal.New(ctx, srv.Connect(t), natsjournal.Config{})
	require.NoError(t, err)
	b, err := natsjournal.New(ctx, srv.Connect(t), natsjournal.Config{}) // a second runner
	require.NoError(t, err)

	es := payloadEntries("big", 100, 2000, 'x') // ~200 KiB of records: four messages
	n, err := a.Append(ctx, "big", 0, es)
	require.NoError(t, err)
	assert.Equal(t, 100, n)
	head, err := b.Head(ctx, "big")
	require.NoError(t, err)
	got, _, err := b.Read(ctx, "big", head, 1000, 1<<30)
	require.NoError(t, err)
	require.Len(t, got, 100)
	for i, e := range got {
		assert.Equal(t, uint64(i+1), e.Index)
		assert.Equal(t, es[i].Payload, e.Payload)
	}
	n, err = b.Append(ctx, "big", 0, es)
	require.NoError(t, err, "an identical resend through the other runner")
	assert.Zero(t, n)

	_, err = a.Append(ctx, "huge", 0, payloadEntries("huge", 1, 70<<10, 'h'))
	require.ErrorIs(t, err, oplog.ErrEntry)
	assert.Contains(t, err.Error(), "entry 1: its record is")

	// Rounds of two runners appending at once: differing entries, or the
	// same ones (a client's resend through another runner), with
	// timestamps or without (the journal stamps them): in two messages
	// (an atomic batch) or in one.
	for round := range 24 {
		w := "race." + strconv.Itoa(round)
		same, unstamped := round%2 == 0, round%4 == 0
		count, size := 60, 2000
		if round%3 == 0 {
			count, size = 10, 100
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, j := range []*natsjournal.Journal{a, b} {
			tag := byte('a' + i)
			if same {
				tag = 's'
			}
			es := payloadEntries(w, count, size, tag)
			if unstamped {
				for k := range es {
					es[k].Timestamp = time.Time{}
				}
			}
			wg.Go(func() {
				_, errs[i] = j.Append(ctx, w, 0, es)
				for k := range es {
					if unstamped && !es[k].Timestamp.IsZero() {
						errs[i] = fmt.Errorf("entry %d was stamped in the caller's slice", es[k].Index)
					}
				}
			})
		}
		wg.Wait()
		head, err := a.Head(ctx, w)
		require.NoError(t, err)
		got, _, err := a.Read(ctx, w, head, 1000, 1<<30)
		require.NoError(t, err)
		require.Len(t, got, count, "one append's entries, once")
		for _, e := range got {
			assert.Equal(t, got[0].Payload, e.Payload, "entries of one append only")
		}
		if same {
			assert.NoError(t, errs[0])
			assert.NoError(t, errs[1])
			continue
		}
		var ce *oplog.ConflictError
		loser := 0
		if errs[0] == nil {
			loser = 1
		}
		require.NoError(t, errs[1-loser])
		require.ErrorAs(t, errs[loser], &ce)
		assert.Equal(t, uint64(1), ce.Index)
		assert.Equal(t, byte('a'+1-loser), got[0].Payload[0], "the winner's entries")
	}
}

// TestExistingStreamChecked: a stream that exists with another replica
// count is an error at start, and is left as it was.
func TestExistingStreamChecked(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	nc := srv.Connect(t)
	_, err := natsjournal.New(ctx, nc, natsjournal.Config{Replicas: 1})
	require.NoError(t, err)
	_, err = natsjournal.New(ctx, nc, natsjournal.Config{Replicas: 3})
	require.ErrorIs(t, err, natsjournal.ErrMismatch)
	assert.Contains(t, err.Error(), "1 replicas")
	assert.Contains(t, err.Error(), "nothing was changed")
	_, err = natsjournal.New(ctx, nc, natsjournal.Config{Replicas: 1})
	assert.NoError(t, err, "still as it was")
}

// recorder writes down each entry a processor is handed, by worker.
type recorder struct {
	mu    sync.Mutex
	seen  map[string][]uint64
	redel int
}

func (*recorder) Version() string                             { return "1.0.0" }
func (*recorder) IsAcceptable() bool                          { return true }
func (*recorder) Init(context.Context, contract.Config) error { return nil }
func (*recorder) Close(context.Context) error                 { return nil }
func (r *recorder) Process(_ context.Context, b contract.Batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range b.Entries {
		r.seen[b.WorkerID] = append(r.seen[b.WorkerID], e.Index)
	}
	if b.Redelivery {
		r.redel++
	}
	return nil
}

func (r *recorder) count(w string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen[w])
}

// TestDelivery: the Deliverer, unchanged, delivers from the stream every
// entry of workers whose IDs differ only where the subject encoding
// matters, each once and to its own worker, including those appended
// before it started, while it runs, and by another runner.
func TestDelivery(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	j, err := natsjournal.New(ctx, srv.Connect(t), natsjournal.Config{})
	require.NoError(t, err)
	other, err := natsjournal.New(ctx, srv.Connect(t), natsjournal.Config{})
	require.NoError(t, err)
	put := func(j *natsjournal.Journal, w string, n int) {
		for i := 0; i < n; i += 25 {
			es := make([]contract.Entry, 0, 25)
			for k := i; k < min(i+25, n); k++ {
				es = append(es, contract.Entry{Index: uint64(k + 1), Kind: "k", Payload: []byte(w)})
			}
			_, err := j.Append(ctx, w, 0, es)
			require.NoError(t, err)
		}
	}
	workers := []string{"a.b", "a_b", "a_db", "a", "b"}
	for _, w := range workers[:3] {
		put(j, w, 100)
	}
	rec := &recorder{seen: map[string][]uint64{}}
	d, err := oplog.NewDeliverer(oplog.Config{Journal: j, BatchSize: 16, Parallel: 2}, "rec", "1.0.0", rec)
	require.NoError(t, err)
	stop, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(stop, ctx) }()
	put(j, "a", 50)
	put(other, "b", 70)
	put(other, "a.b", 100) // a resend through the other runner: nothing new
	want := map[string]int{"a.b": 100, "a_b": 100, "a_db": 100, "a": 50, "b": 70}
	deadline := time.Now().Add(30 * time.Second)
	for w, n := range want {
		for rec.count(w) < n {
			require.True(t, time.Now().Before(deadline), "%s: %d of %d delivered", w, rec.count(w), n)
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond) // nothing more arrives
	cancel()
	require.NoError(t, <-done)
	for w, n := range want {
		want := make([]uint64, n)
		for i := range want {
			want[i] = uint64(i + 1)
		}
		assert.Equal(t, want, rec.seen[w], w)
	}
	assert.Zero(t, rec.redel)
	listed, err := j.Workers(ctx)
	require.NoError(t, err)
	assert.ElementsMatch(t, workers, listed)
}

// TestExampleConfigs: the README's cluster configurations are ones
// nats-server accepts.
func TestExampleConfigs(t *testing.T) {
	bin := natstest.Binary(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		out, err := exec.Command(bin, "-t", "-c", filepath.Join("..", "..", "..", "examples", "nats", n+".conf")).CombinedOutput()
		assert.NoError(t, err, "%s: %s", n, out)
		assert.Contains(t, string(out), "is valid", n)
	}
}

// TestAppendAfterAnotherRunner: a runner whose last look at a worker is
// stale (another runner appended since) judges an append on the stream's
// end, not on what it saw: the next entries are taken, a resend of the
// other runner's is identical, a gap is still a gap.
func TestAppendAfterAnotherRunner(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	a, b := mustJournal(t, srv, "a"), mustJournal(t, srv, "b")
	es := payloadEntries("s", 40, 10, 'e')
	n, err := a.Append(ctx, "s", 0, es[0:10])
	require.NoError(t, err)
	require.Equal(t, 10, n)
	n, err = b.Append(ctx, "s", 0, es[10:20])
	require.NoError(t, err)
	require.Equal(t, 10, n)
	n, err = a.Append(ctx, "s", 0, es[20:30])
	require.NoError(t, err, "a's view was stale")
	assert.Equal(t, 10, n)
	n, err = b.Append(ctx, "s", 0, es[10:30])
	require.NoError(t, err, "an identical resend through b")
	assert.Zero(t, n)
	var oe *oplog.OrderError
	_, err = a.Append(ctx, "s", 0, es[35:40])
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, uint64(31), oe.Expected)
}

// TestForeignMessages: a message on a worker's subject that no Journal
// wrote (published by hand, by another tool) and that is not what a
// journal message must be is a corrupt journal, named with the message,
// never skipped or delivered out of place.
func TestForeignMessages(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	j := mustJournal(t, srv, "a")
	js, err := jetstream.New(srv.Connect(t))
	require.NoError(t, err)
	records := func(from, n int) []byte {
		es := make([]contract.Entry, n)
		for i := range es {
			es[i] = contract.Entry{Index: uint64(from + i), Timestamp: time.Unix(1, 0), Kind: "k", Payload: []byte("p")}
		}
		return oplog.AppendRecords(nil, es, time.Time{})
	}
	for i, tc := range []struct {
		name         string
		first, count string
		data         []byte
		want         string
	}{
		{"no headers", "", "", records(1, 3), "no valid Soplug-First and Soplug-Count headers"},
		{"a first index of 0", "0", "3", records(1, 3), "no valid"},
		{"records other than the headers say", "1", "3", records(4, 3), "its headers say 3 entries from 1, its records hold 3 entries from 4 to 6"},
		{"fewer records", "1", "3", records(1, 2), "its records hold 2 entries from 1 to 2"},
		{"no records", "1", "1", nil, "its records hold none"},
		{"not records", "1", "1", []byte("{\"hello\": 1}\n"), "corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			worker := "foreign" + strconv.Itoa(i)
			m := nats.NewMsg("soplug.oplog." + worker)
			m.Data = tc.data
			if tc.first != "" {
				m.Header.Set("Soplug-First", tc.first)
				m.Header.Set("Soplug-Count", tc.count)
			}
			_, err := js.PublishMsg(ctx, m)
			require.NoError(t, err)
			_, _, err = j.Read(ctx, worker, oplog.Position{Next: 1, At: 1}, 100, 1<<20)
			require.ErrorIs(t, err, oplog.ErrCorrupt)
			assert.ErrorContains(t, err, tc.want)
			assert.ErrorContains(t, err, worker+" message ")
		})
	}
}

// TestMessageDataReused: message data goes back to a pool once published,
// and eight runners' goroutines appending at once, in single messages and
// in batches, still store exactly what each sent.
func TestMessageDataReused(t *testing.T) {
	srv := natstest.StartWith(t, natstest.Options{MaxPayload: 64 << 10})
	ctx := context.Background()
	j, err := natsjournal.New(ctx, srv.Connect(t), natsjournal.Config{})
	require.NoError(t, err)
	const writers, rounds = 8, 12
	var wg sync.WaitGroup
	sent := make([][]contract.Entry, writers)
	for c := range writers {
		wg.Go(func() {
			w := "reuse-" + strconv.Itoa(c)
			for r := range rounds {
				size := []int{10, 3000, 200, 9000}[(c+r)%4] // 9000 B x 10: two messages
				es := payloadEntries(w, 10, size, byte('A'+c))
				for k := range es {
					es[k].Index = uint64(r*10 + k + 1)
					es[k].Payload[0] = byte(r) // each append's payloads its own
				}
				if _, err := j.Append(ctx, w, 0, es); err != nil {
					t.Errorf("%s append %d: %v", w, r, err)
					return
				}
				sent[c] = append(sent[c], es...)
			}
		})
	}
	wg.Wait()
	for c := range writers {
		w := "reuse-" + strconv.Itoa(c)
		head, err := j.Head(ctx, w)
		require.NoError(t, err)
		got, _, err := j.Read(ctx, w, head, 1000, 1<<30)
		require.NoError(t, err)
		require.Len(t, got, len(sent[c]), w)
		for i := range got {
			assert.Equal(t, sent[c][i].Index, got[i].Index)
			assert.True(t, bytes.Equal(sent[c][i].Payload, got[i].Payload), "%s entry %d holds what was sent", w, got[i].Index)
		}
	}
}
