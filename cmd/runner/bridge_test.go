package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/soplug/soplug/internal/access/accesstest"
	"github.com/soplug/soplug/internal/oplog"
)

// bridgeCall is one call of the harness (internal/golembridge/test).
type bridgeCall struct {
	Component string            `json:"component"`
	Agent     string            `json:"agent"`
	From      int               `json:"from"`
	To        int               `json:"to"`
	Config    map[string]string `json:"config"`
	Retries   int               `json:"retries,omitempty"`
	PauseMS   int               `json:"pause_ms,omitempty"`
}

// bridgeResult is the harness's line for one call.
type bridgeResult struct {
	Call     int      `json:"call"`
	OK       bool     `json:"ok"`
	Attempts int      `json:"attempts"`
	Errors   []string `json:"errors"`
}

const bridgeComponent = "3c5a2e1f000040008000000000000001"

// buildBridge builds the Golem oplog-processor bridge with its script and
// returns the transpiled module's path.
func buildBridge(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command(filepath.Join("..", "..", "internal", "golembridge", "build.sh"), out)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "building the bridge (needs node and npm):\n%s", b)
	fi, err := os.Stat(filepath.Join(out, "golem-oplog-bridge.wasm"))
	require.NoError(t, err)
	t.Logf("the bridge component: %d bytes", fi.Size())
	return filepath.Join(out, "js", "bridge.js")
}

// runHarness runs the harness over calls, with env added to this
// process's environment, and returns its case names and one result per
// call.
func runHarness(t *testing.T, bridge string, calls []bridgeCall, env ...string) ([]string, []bridgeResult) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "calls.json")
	b, err := json.Marshal(calls)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
	cmd := exec.Command("node", filepath.Join("..", "..", "internal", "golembridge", "test", "harness.mjs"), bridge, path)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		t.Fatalf("the harness: %v\n%s\n%s", err, out, ee.Stderr)
	}
	require.NoError(t, err)
	var cases []string
	var results []bridgeResult
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if cases == nil {
			var head struct{ Cases []string }
			require.NoError(t, json.Unmarshal(sc.Bytes(), &head))
			cases = head.Cases
			continue
		}
		var r bridgeResult
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r), "%s", sc.Text())
		results = append(results, r)
	}
	require.Len(t, results, len(calls), "%s", out)
	return cases, results
}

// TestGolemBridge runs the bridge, built from its source and transpiled by
// jco, in Node against a real runner whose processor records what it is
// handed: batches with every oplog-entry case of golem:api 1.3.0, each sent
// twice; batches out of order from two bridge instances at once (a batch
// ahead of its predecessor is refused, and Golem's retry brings it in
// later); agent IDs that differ only in characters soplug's IDs forbid; and
// a stream during which the runner is restarted. Every entry reaches the
// processor once, in order, under its case's name, with its timestamp.
func TestGolemBridge(t *testing.T) {
	t.Parallel()
	bridge := buildBridge(t)
	work := t.TempDir()
	oplogDir, seen := filepath.Join(work, "oplog"), filepath.Join(work, "seen.log")
	dir := copyPlugins(t, "oplogrecorder=recorder_v1.0.0.so")
	conf := filepath.Join(work, "plugins.toml")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("[plugins.recorder.config]\nfile = %q\n", seen)), 0o644))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	var runners []*daemonProc
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for i, d := range runners {
			t.Logf("runner %d's log:\n%s", i, d.text())
		}
		t.Logf("what the processor was handed:\n%s", readFile(t, seen))
	})
	run := func() *daemonProc {
		d := startIn(t, "", "run", "--plugins", dir, "--config", conf, "--oplog-dir", oplogDir, "--listen", addr, "--min-uptime", "-1s")
		runners = append(runners, d)
		d.waitLog(t, `msg=ready`)
		return d
	}
	d := run()
	cfg := map[string]string{"runner-url": "http://" + addr}
	batch := func(agent string, from, to int) bridgeCall {
		return bridgeCall{Component: bridgeComponent, Agent: agent, From: from, To: to, Config: cfg, Retries: 30, PauseMS: 100}
	}
	want := map[string]int{} // agent → its last index

	// Every case, each batch twice.
	var calls []bridgeCall
	for _, b := range [][2]int{{1, 12}, {13, 25}, {26, 37}, {38, 80}} {
		calls = append(calls, batch(`cart("all-cases")`, b[0], b[1]), batch(`cart("all-cases")`, b[0], b[1]))
	}
	want[`cart("all-cases")`] = 80
	// IDs that differ only where soplug's rules forbid characters, and one
	// too long to escape.
	lookalikes := []string{"a.b", "a_b", "a/b", "a b", "a%2Eb", "a_2Eb", "ä", "a.*", strings.Repeat("long-agent/", 20)}
	for _, a := range lookalikes {
		calls = append(calls, batch(a, 1, 3))
		want[a] = 3
	}
	cases, results := runHarness(t, bridge, calls)
	require.Len(t, cases, 37, "every case of golem:api@1.3.0's oplog-entry")
	for i, r := range results {
		assert.True(t, r.OK, "call %d (%s %d-%d): %v", i, calls[i].Agent, calls[i].From, calls[i].To, r.Errors)
		assert.Equal(t, 1, r.Attempts, "call %d: in order, nothing to retry", i)
	}

	t.Run("out of order from two instances", func(t *testing.T) {
		const agent = `cart("raced")`
		one := []bridgeCall{batch(agent, 21, 30), batch(agent, 1, 10), batch(agent, 31, 40)}
		two := []bridgeCall{batch(agent, 11, 20), batch(agent, 21, 30), batch(agent, 41, 50)}
		var wg sync.WaitGroup
		var r1, r2 []bridgeResult
		wg.Go(func() { _, r1 = runHarness(t, bridge, one) })
		wg.Go(func() { _, r2 = runHarness(t, bridge, two) })
		wg.Wait()
		retried := 0
		for i, r := range append(r1, r2...) {
			assert.True(t, r.OK, "call %d: %v", i, r.Errors)
			for _, e := range r.Errors {
				assert.Contains(t, e, `"expected_index"`, "a batch ahead of its predecessor is refused as a gap")
			}
			retried += r.Attempts - 1
		}
		assert.Positive(t, retried, "batches that arrived early were retried, as Golem retries")
		want[agent] = 50
	})

	t.Run("first-index auto: a journal attached mid-life", func(t *testing.T) {
		const agent = `cart("mid-life")`
		auto := map[string]string{"runner-url": "http://" + addr, "first-index": "auto"}
		calls := []bridgeCall{
			{Component: bridgeComponent, Agent: agent, From: 100, To: 110, Config: auto},
			{Component: bridgeComponent, Agent: agent, From: 111, To: 120, Config: auto},
			{Component: bridgeComponent, Agent: agent, From: 121, To: 121, Config: map[string]string{"runner-url": "http://" + addr, "first-index": "7"}},
			{Component: bridgeComponent, Agent: agent, From: 121, To: 121, Config: map[string]string{"runner-url": "ftp://" + addr}},
		}
		_, results := runHarness(t, bridge, calls)
		assert.True(t, results[0].OK, "%v", results[0].Errors)
		assert.True(t, results[1].OK, "%v", results[1].Errors)
		require.False(t, results[2].OK)
		assert.Contains(t, results[2].Errors[0], `soplug bridge: first-index "7": want 1 or auto`)
		require.False(t, results[3].OK)
		assert.Contains(t, results[3].Errors[0], `soplug bridge: the installation's runner-url "ftp://`)
		r, err := oplog.OpenReader(oplogDir, bridgeWorker(agent))
		require.NoError(t, err)
		defer r.Close()
		assert.Equal(t, uint64(100), r.First(), "the journal starts where the first batch did")
		assert.Eventually(t, func() bool { return len(deliveries(t, seen, bridgeWorker(agent))) == 21 }, time.Minute, 20*time.Millisecond)
		assert.Equal(t, seq(100, 120), deliveries(t, seen, bridgeWorker(agent)))
	})

	t.Run("over TLS with a token", func(t *testing.T) {
		// A runner on another host, as the README registers it: https and
		// a bearer token of scope append. The harness trusts the runner's
		// self-signed certificate through Node's NODE_EXTRA_CA_CERTS, as a
		// host would through its CA store.
		work := t.TempDir()
		cert := accesstest.WriteCert(t, work, "runner")
		tokens := tokensFile(t, "bridge append "+appendTok, "golem transform "+golemToken)
		seenTLS := filepath.Join(work, "seen.log")
		confTLS := filepath.Join(work, "plugins.toml")
		require.NoError(t, os.WriteFile(confTLS, []byte(fmt.Sprintf("[plugins.recorder.config]\nfile = %q\n", seenTLS)), 0o644))
		tlsDir := filepath.Join(work, "oplog")
		r := start(t, dir, "--config", confTLS, "--oplog-dir", tlsDir, "--tokens", tokens, "--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile)
		runners = append(runners, r)
		base := "https://" + <-r.addr
		r.waitLog(t, `msg=ready`)
		with := func(agent, token string) bridgeCall {
			return bridgeCall{Component: bridgeComponent, Agent: agent, From: 1, To: 10, Config: map[string]string{"runner-url": base, "token": token}}
		}
		trusted := "NODE_EXTRA_CA_CERTS=" + cert.CertFile
		_, res := runHarness(t, bridge, []bridgeCall{
			with("tls", appendTok),
			with("tls-wrong-token", appendTok+"x"),
			with("tls-wrong-scope", golemToken),
			with("tls-no-token", ""),
		}, trusted)
		assert.True(t, res[0].OK, "%v", res[0].Errors)
		for i, code := range map[int]string{1: "401", 2: "403", 3: "401"} {
			require.False(t, res[i].OK, "call %d", i)
			assert.Equal(t, 1, res[i].Attempts, "call %d: a 4xx is Golem's error at once, not retried", i)
			assert.Contains(t, res[i].Errors[0], base+": "+code+": ", "call %d", i)
		}
		// Without the certificate trusted, the connection fails: retried,
		// then an error; nothing reached the runner.
		_, res = runHarness(t, bridge, []bridgeCall{with("tls-untrusted", appendTok)}, "NODE_EXTRA_CA_CERTS=")
		require.False(t, res[0].OK)
		assert.Contains(t, res[0].Errors[0], ": 0: the request failed: ")
		assert.Eventually(t, func() bool { return len(deliveries(t, seenTLS, bridgeWorker("tls"))) == 10 }, time.Minute, 20*time.Millisecond)
		assert.Equal(t, seq(1, 10), deliveries(t, seenTLS, bridgeWorker("tls")))
		for _, agent := range []string{"tls-wrong-token", "tls-wrong-scope", "tls-no-token", "tls-untrusted"} {
			_, err := oplog.OpenReader(tlsDir, bridgeWorker(agent))
			assert.ErrorIs(t, err, os.ErrNotExist, "%s: no journal: nothing was appended", agent)
		}
		assert.NotContains(t, r.text(), appendTok, "the token is never logged")
	})

	const restarted = `cart("restarted")`
	t.Run("the runner restarted mid-stream", func(t *testing.T) {
		const agent = restarted
		var calls []bridgeCall
		for from := 1; from <= 200; from += 5 {
			calls = append(calls, batch(agent, from, from+4))
		}
		done := make(chan []bridgeResult)
		go func() { _, r := runHarness(t, bridge, calls); done <- r }()
		for !strings.Contains(readFile(t, seen), `restarted`) { // the stream has begun
			time.Sleep(20 * time.Millisecond)
		}
		require.NoError(t, d.cmd.Process.Signal(syscall.SIGKILL))
		<-d.done
		assert.Less(t, len(deliveries(t, seen, bridgeWorker(agent))), 200, "killed mid-stream")
		d = run()
		for i, r := range <-done {
			assert.True(t, r.OK, "call %d: %v", i, r.Errors)
		}
		want[agent] = 200
	})

	// Every entry delivered once, in order; the journals hold the cases.
	// (Redeliveries after the kill count in the recorder's file too: wait
	// for each worker's unflagged deliveries, not for a number of lines.)
	delivered := func() bool {
		for agent, last := range want {
			if len(deliveries(t, seen, bridgeWorker(agent))) < last {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(time.Minute); !delivered() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	workers := map[string]string{}
	for agent, last := range want {
		id := bridgeWorker(agent)
		require.NotContains(t, workers, id, "%q and %q share worker %s", agent, workers[id], id)
		workers[id] = agent
		order := deliveries(t, seen, id)
		wantOrder := make([]uint64, last)
		for i := range wantOrder {
			wantOrder[i] = uint64(i + 1)
		}
		if agent == restarted {
			// The kill may leave a batch in flight, which comes again
			// flagged (so may entries that reached the next runner before
			// its first read found the journal's end): none is missing,
			// none comes twice unflagged.
			assert.True(t, slices.IsSorted(order) && len(slices.Compact(slices.Clone(order))) == len(order),
				"%s: no index twice unflagged, in order: %v", agent, order)
			all := append(slices.Clone(order), redeliveries(t, seen, id)...)
			slices.Sort(all)
			assert.Equal(t, wantOrder, slices.Compact(all), "%s (%s): every index, flagged or not", agent, id)
		} else {
			assert.Equal(t, wantOrder, order, "%s (%s): every index once, in order, unflagged", agent, id)
		}
		r, err := oplog.OpenReader(oplogDir, id)
		require.NoError(t, err, agent)
		entries, err := r.Read(1000, 64<<20)
		r.Close()
		require.NoError(t, err)
		require.Equal(t, last, len(entries), agent)
		for _, e := range entries {
			k := int(e.Index)
			assert.Equal(t, cases[(k-1)%len(cases)], e.Kind, "%s %d", agent, k)
			assert.Equal(t, time.Unix(1700000000+int64(k), int64(k*1000)).UTC(), e.Timestamp.UTC(), "%s %d", agent, k)
			assert.True(t, json.Valid(e.Payload), "%s %d: the payload is the case's fields as JSON: %s", agent, k, e.Payload)
		}
	}
	assert.Len(t, workers, len(want), "one worker per agent")
}

// bridgeWorker is the worker ID the bridge gives an agent of
// bridgeComponent (src/bridge.js's workerID, for IDs that fit).
func bridgeWorker(agent string) string {
	var esc strings.Builder
	for _, b := range []byte(agent) {
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '-':
			esc.WriteByte(b)
		default:
			fmt.Fprintf(&esc, "_%02X", b)
		}
	}
	id := "g." + bridgeComponent + "." + esc.String()
	if len(id) > 128 {
		return hashedWorker(agent)
	}
	return id
}

// hashedWorker is the bridge's worker ID for an agent whose escaped ID
// would be over 128 characters: the SHA-256 of the agent ID.
func hashedWorker(agent string) string {
	sum := sha256.Sum256([]byte(agent))
	return "h." + bridgeComponent + "." + hex.EncodeToString(sum[:])
}

// deliveries lists the indexes the recorder saw unflagged for worker, in
// order, from its complete frames (readRecorder: a frame a kill tore was
// never acknowledged).
func deliveries(t *testing.T, path, worker string) []uint64 {
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return nil
	}
	return readRecorder(t, path).order[worker]
}

// redeliveries lists the indexes the recorder saw flagged for worker,
// from its complete frames.
func redeliveries(t *testing.T, path, worker string) []uint64 {
	return slices.Sorted(maps.Keys(readRecorder(t, path).flagged[worker]))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return ""
	}
	require.NoError(t, err)
	return string(b)
}

// seq is from..to.
func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}
