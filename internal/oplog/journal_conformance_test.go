package oplog_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/journaltest"
)

// TestJournalConformance runs the one conformance suite against every
// Journal implementation: the next backend joins this table.
func TestJournalConformance(t *testing.T) {
	backends := []struct {
		name string
		b    journaltest.Backend
	}{
		{"file", journaltest.Backend{
			New: func(t *testing.T) oplog.Journal {
				j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: t.TempDir()})
				t.Cleanup(func() { j.Close() })
				return j
			},
			Reopen: func(t *testing.T, j oplog.Journal) oplog.Journal {
				fj := j.(*oplog.FileJournal)
				require.NoError(t, fj.Close())
				n := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: fj.Dir()})
				t.Cleanup(func() { n.Close() })
				return n
			},
		}},
		{"memory", journaltest.Backend{
			New: func(*testing.T) oplog.Journal { return journaltest.NewMemory() },
		}},
	}
	for _, tc := range backends {
		t.Run(tc.name, func(t *testing.T) { journaltest.Run(t, tc.b) })
	}
}

// TestDeliveryOverEveryJournal: delivery reaches a journal only through
// the interface, so the same run (workers written before and during
// delivery, one appearing late, a mid-life start) is delivered whole and
// once from each backend.
func TestDeliveryOverEveryJournal(t *testing.T) {
	for _, tc := range []struct {
		name string
		j    func(t *testing.T) oplog.Journal
	}{
		{"file", func(t *testing.T) oplog.Journal {
			j := oplog.NewFileJournal(oplog.FileJournalConfig{Dir: t.TempDir()})
			t.Cleanup(func() { j.Close() })
			return j
		}},
		{"memory", func(*testing.T) oplog.Journal { return journaltest.NewMemory() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := tc.j(t)
			ctx := context.Background()
			put := func(w string, first uint64, n int) {
				for i := 0; i < n; i += 50 {
					es := make([]contract.Entry, 0, 50)
					for k := i; k < min(i+50, n); k++ {
						es = append(es, contract.Entry{Index: first + uint64(k), Kind: "k", Payload: []byte(w)})
					}
					_, err := j.Append(ctx, w, first, es)
					require.NoError(t, err)
				}
			}
			put("a", 1, 300)
			put("b", 1, 100)
			rec := newRecorder()
			_, stop := run(t, oplog.Config{Journal: j, BatchSize: 64, Parallel: 2}, rec)
			var wg sync.WaitGroup
			wg.Go(func() { put("a", 1, 600) }) // resends the first 300, then extends
			wg.Go(func() { put("late", 1, 10) })
			wg.Go(func() { put("mid", 41, 20) })
			wg.Wait()
			eventually(t, "all delivered", func() bool {
				return rec.count("a") == 600 && rec.count("b") == 100 && rec.count("late") == 10 && rec.count("mid") == 20
			})
			stop()
			assert.Equal(t, seq(1, 600), rec.seen["a"])
			assert.Equal(t, seq(1, 100), rec.seen["b"])
			assert.Equal(t, seq(1, 10), rec.seen["late"])
			assert.Equal(t, seq(41, 60), rec.seen["mid"])
			assert.Empty(t, rec.redel)
		})
	}
}
