// The tests' stand-in for Golem's executor: it instantiates the bridge (as
// jco transpiled it) and calls its process export with batches of oplog
// entries of every case of golem:api 1.3.0, as Golem would.
//
//   node harness.mjs BRIDGE_JS COMMANDS_JSON
//
// COMMANDS_JSON is a list of calls, {"component": 32 hex digits, "agent":
// agent ID, "from": first index, "to": last index, "config": {...},
// "retries": N, "pause_ms": M}: process is called with entries from..to
// (the entry at index k is case CASES[(k-1) % CASES.length]); an error is
// retried up to N times, in rounds M ms apart in which the calls after it
// are tried too, as Golem retries a failed batch later. Each
// call's outcome is a JSON line on stdout: {"call": i, "ok": bool,
// "attempts": n, "errors": [...]}. The first line lists the case names.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [bridgePath, commandsPath] = process.argv.slice(2);
const { oplogProcessor } = await import(pathToFileURL(bridgePath).href);
const commands = JSON.parse(readFileSync(commandsPath, 'utf8'));

const dt = (k) => ({ seconds: 1700000000n + BigInt(k), nanoseconds: (k * 1000) % 1e9 });
const uuid = (h, l) => ({ highBits: h, lowBits: l });
const agent = (name) => ({ componentId: { uuid: uuid(0x3c5a2e1f00004000n, 0x8000000000000001n) }, agentId: name });
const vt = (s) => ({
  value: { nodes: [{ tag: 'record-value', val: [1, 2] }, { tag: 'prim-string', val: s }, { tag: 'prim-u64', val: 18446744073709551615n }] },
  typ: {
    nodes: [
      { name: 'pair', owner: 'shop:cart', type: { tag: 'record-type', val: [['name', 1], ['count', 2]] } },
      { name: undefined, owner: undefined, type: { tag: 'prim-string-type' } },
      { name: undefined, owner: undefined, type: { tag: 'prim-u64-type' } },
    ],
  },
});
const plugin = { name: 'soplug-bridge', version: 'v1', parameters: [['runner-url', 'https://soplug.internal:7420']] };
const span = (k) => ({
  tag: 'local-span',
  val: { spanId: `span-${k}`, start: dt(k), parent: undefined, linkedContext: 0n, attributes: [{ key: 'route', value: { tag: 'string', val: '/cart' } }], inherited: false },
});
const ts = (k) => ({ timestamp: dt(k) });
const region = (k) => ({ timestamp: dt(k), beginIndex: BigInt(k - 1) });

// One maker per case of golem:api@1.3.0's oplog-entry, in the WIT's order.
export const CASES = [
  ['create', (k) => ({ timestamp: dt(k), agentId: agent('cart-1'), componentRevision: 3n, args: ['--verbose'], env: [['REGION', 'eu-1']], createdBy: { uuid: uuid(1n, 2n) }, environmentId: { uuid: uuid(3n, 4n) }, parent: undefined, componentSize: 123456n, initialTotalLinearMemorySize: 1114112n, initialActivePlugins: [plugin], configVars: [['mode', 'strict']] })],
  ['imported-function-invoked', (k) => ({ timestamp: dt(k), functionName: 'wasi:http/outgoing-handler.handle', request: vt('req'), response: vt('resp'), wrappedFunctionType: { tag: 'write-remote-batched', val: 5n } })],
  ['exported-function-invoked', (k) => ({ timestamp: dt(k), functionName: 'shop:cart/api.{add-item}', request: [vt('item')], idempotencyKey: `key-${k}`, traceId: 'trace-1', traceStates: ['a=1'], invocationContext: [[span(k), { tag: 'external-span', val: { spanId: 'outer' } }]] })],
  ['exported-function-completed', (k) => ({ timestamp: dt(k), response: vt('done'), consumedFuel: -42n })],
  ['suspend', ts],
  ['error', (k) => ({ timestamp: dt(k), error: 'trap: unreachable\n  at add-item', retryFrom: BigInt(k - 2) })],
  ['no-op', ts],
  ['jump', (k) => ({ timestamp: dt(k), jump: { start: BigInt(k - 3), end: BigInt(k - 1) } })],
  ['interrupted', ts],
  ['exited', ts],
  ['change-retry-policy', (k) => ({ timestamp: dt(k), newPolicy: { maxAttempts: 5, minDelay: 100000000n, maxDelay: 2000000000n, multiplier: 1.5, maxJitterFactor: 0.25 } })],
  ['begin-atomic-region', ts],
  ['end-atomic-region', region],
  ['begin-remote-write', ts],
  ['end-remote-write', region],
  ['pending-agent-invocation', (k) => ({ timestamp: dt(k), invocation: { tag: 'exported-function', val: { idempotencyKey: `key-${k}`, functionName: 'shop:cart/api.{checkout}', input: [vt('now')], traceId: 'trace-2', traceStates: [], invocationContext: [[span(k)]] } } })],
  ['pending-update', (k) => ({ timestamp: dt(k), targetRevision: 4n, updateDescription: { tag: 'snapshot-based', val: new Uint8Array([0, 1, 2, 253, 254, 255]) } })],
  ['successful-update', (k) => ({ timestamp: dt(k), targetRevision: 4n, newComponentSize: 234567n, newActivePlugins: [plugin] })],
  ['failed-update', (k) => ({ timestamp: dt(k), targetRevision: 5n, details: 'incompatible exports' })],
  ['grow-memory', (k) => ({ timestamp: dt(k), delta: 65536n })],
  ['create-resource', (k) => ({ timestamp: dt(k), resourceId: 7n, name: 'cart-session', owner: 'shop:cart/api' })],
  ['drop-resource', (k) => ({ timestamp: dt(k), resourceId: 7n, name: 'cart-session', owner: 'shop:cart/api' })],
  ['log', (k) => ({ timestamp: dt(k), level: 'warn', context: 'add-item', message: 'stock low: "ünïcødé" \u2603' })],
  ['restart', ts],
  ['activate-plugin', (k) => ({ timestamp: dt(k), plugin })],
  ['deactivate-plugin', (k) => ({ timestamp: dt(k), plugin })],
  ['revert', (k) => ({ timestamp: dt(k), start: BigInt(k - 5), end: BigInt(k - 1) })],
  ['cancel-invocation', (k) => ({ timestamp: dt(k), idempotencyKey: `key-${k - 1}` })],
  ['start-span', (k) => ({ timestamp: dt(k), spanId: `span-${k}`, parent: 'root', linkedContext: undefined, attributes: [{ key: 'user', value: { tag: 'string', val: 'ada' } }] })],
  ['finish-span', (k) => ({ timestamp: dt(k), spanId: `span-${k - 1}` })],
  ['set-span-attribute', (k) => ({ timestamp: dt(k), spanId: `span-${k - 2}`, key: 'status', value: { tag: 'string', val: 'ok' } })],
  ['change-persistence-level', (k) => ({ timestamp: dt(k), persistenceLevel: { tag: 'persist-remote-side-effects' } })],
  ['begin-remote-transaction', (k) => ({ timestamp: dt(k), transactionId: `tx-${k}` })],
  ['pre-commit-remote-transaction', region],
  ['pre-rollback-remote-transaction', region],
  ['committed-remote-transaction', region],
  ['rolled-back-remote-transaction', region],
];

const entryAt = (k) => {
  const [tag, make] = CASES[(k - 1) % CASES.length];
  return { tag, val: make(k) };
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

console.log(JSON.stringify({ cases: CASES.map(([tag]) => tag) }));
// Rounds: each pending call is tried once per round, in order; one that
// fails waits for the next round, as Golem retries a failed batch later
// while it hands on the ones after it.
const state = commands.map(() => ({ ok: false, attempts: 0, errors: [] }));
let pending = commands.map((_, i) => i);
for (let round = 0; pending.length > 0; round++) {
  if (round > 0) await sleep(Math.max(...pending.map((i) => commands[i].pause_ms || 200)));
  const next = [];
  for (const i of pending) {
    const c = commands[i], st = state[i];
    const entries = [];
    for (let k = c.from; k <= c.to; k++) entries.push(entryAt(k));
    const config = Object.entries(c.config || {});
    const a = { componentId: { uuid: { highBits: BigInt('0x' + c.component.slice(0, 16)), lowBits: BigInt('0x' + c.component.slice(16)) } }, agentId: c.agent };
    const metadata = { agentId: a, args: [], env: [], configVars: [], status: 'running', componentRevision: 3n, retryCount: 0n };
    st.attempts++;
    try {
      oplogProcessor.process({ accountId: { uuid: uuid(1n, 2n) } }, config, a.componentId, a, metadata, BigInt(c.from), entries);
      st.ok = true;
    } catch (e) {
      st.errors.push(String(e.payload ?? e));
      if (st.attempts <= (c.retries || 0)) next.push(i);
    }
  }
  pending = next;
}
for (const [i, st] of state.entries()) console.log(JSON.stringify({ call: i, ...st }));
