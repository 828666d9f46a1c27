package oplog_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/oplog"
)

// TestRecordsStampedAsWritten: AppendRecords records an entry without a
// timestamp with now and one with a timestamp with its own, leaves the
// caller's entries as they were, and DecodeRecords reads back what
// CheckStamped judged; CheckStamped refuses what Stamp refuses, and
// changes nothing either.
func TestRecordsStampedAsWritten(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	own := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	es := []contract.Entry{
		{Index: 1, Kind: "invoke", Payload: []byte("a")},
		{Index: 2, Timestamp: own, Kind: "log", Payload: nil},
		{Index: 3, Kind: "invoke", Payload: make([]byte, 300)},
	}
	require.NoError(t, oplog.CheckStamped("w", es, now))
	data := oplog.AppendRecords(nil, es, now)
	assert.True(t, es[0].Timestamp.IsZero(), "the caller's entry is left unstamped")
	assert.True(t, es[2].Timestamp.IsZero())
	assert.Len(t, data, int(oplog.RecordBytes(es)))

	got, err := oplog.DecodeRecords(data, "w", "the test's records")
	require.NoError(t, err)
	require.Len(t, got, 3)
	for i, want := range []time.Time{now, own, now} {
		assert.True(t, want.Equal(got[i].Timestamp), "entry %d: %v, want %v", i+1, got[i].Timestamp, want)
		assert.Equal(t, es[i].Index, got[i].Index)
		assert.Equal(t, es[i].Kind, got[i].Kind)
		assert.Equal(t, len(es[i].Payload), len(got[i].Payload))
	}

	for _, tc := range []struct {
		name string
		e    contract.Entry
		now  time.Time
	}{
		{"another worker's", contract.Entry{WorkerID: "v", Index: 1, Kind: "k"}, now},
		{"a kind too long", contract.Entry{Index: 1, Kind: string(make([]byte, oplog.MaxKind+1))}, now},
		{"a payload too large", contract.Entry{Index: 1, Kind: "k", Payload: make([]byte, oplog.MaxPayload+1)}, now},
		{"stamped out of range", contract.Entry{Index: 1, Kind: "k"}, oplog.MaxTimestamp.Add(time.Second)},
		{"its own out of range", contract.Entry{Index: 1, Kind: "k", Timestamp: oplog.MinTimestamp.Add(-time.Second)}, now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es := []contract.Entry{tc.e}
			err := oplog.CheckStamped("w", es, tc.now)
			require.ErrorIs(t, err, oplog.ErrEntry)
			stamped := []contract.Entry{tc.e}
			assert.Equal(t, oplog.Stamp("w", stamped, tc.now), err, "the same error as Stamp's")
			assert.Equal(t, tc.e, es[0], "left as it was")
		})
	}
}
