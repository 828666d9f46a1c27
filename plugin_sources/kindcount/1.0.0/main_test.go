package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/contract"
)

func TestCountsAndRedelivery(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := OplogProcessor()
	require.NoError(t, p.Init(ctx, contract.Config{"dir": dir}))
	batch := func(first uint64, kinds ...string) contract.Batch {
		b := contract.Batch{WorkerID: "w-1", FirstIndex: first}
		for i, k := range kinds {
			b.Entries = append(b.Entries, contract.Entry{WorkerID: "w-1", Index: first + uint64(i), Kind: k})
		}
		return b
	}
	require.NoError(t, p.Process(ctx, batch(1, "invoke", "invoke", "http")))
	redelivered := batch(2, "invoke", "http", "http")
	redelivered.Redelivery = true
	require.NoError(t, p.Process(ctx, redelivered))
	require.NoError(t, p.Close(ctx))

	data, err := os.ReadFile(filepath.Join(dir, "w-1.json"))
	require.NoError(t, err)
	var got counts
	require.NoError(t, json.Unmarshal(data, &got))
	assert.Equal(t, counts{LastIndex: 4, ByKind: map[string]int{"invoke": 2, "http": 2}}, got)
}

func TestProcessBeforeInit(t *testing.T) {
	err := OplogProcessor().Process(context.Background(), contract.Batch{WorkerID: "w"})
	assert.ErrorContains(t, err, "before Init")
}
