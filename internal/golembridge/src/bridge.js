// The soplug bridge: a Golem oplog-processor plugin (golem:api 1.3.0, Golem
// 1.4) that forwards each batch of an agent's oplog entries to a soplug
// runner's append API, POST /v1/workers/{id}/oplog, so that soplug's
// OplogProcessors see Golem's agents.
//
// Each entry becomes one soplug entry: its index, kind = the case name
// ("create", "log", ...), the case's timestamp, and payload = the case's
// fields as JSON (u64 and s64 as decimal strings, list<u8> as base64).
// Appends are idempotent on soplug's side (an identical resend is a 200),
// so a batch Golem sends again, or two bridge instances send at once, is
// safe. A batch that arrives ahead of its predecessor is a 409 gap there:
// the bridge returns an error and Golem retries the batch later. 5xx
// answers and failed connections are retried with backoff; any other 4xx
// is returned to Golem as the error string.
//
// Configuration (the plugin installation's parameters):
//   runner-url   the runner's base URL, e.g. https://soplug.internal:7420 (required)
//   token        a bearer token with scope append (runner --tokens)
//   first-index  "1" (the default): every agent's journal starts at its
//                oplog's index 1, so a batch from further on waits (409)
//                until the ones before it are in; "auto": an agent whose
//                journal does not exist yet starts it at the batch that
//                reaches soplug first, for a plugin activated on running
//                agents (a batch racing ahead of the first would then start
//                it too late: use only where batches do not race)

const MAX_ENTRIES = 1000; // per append: soplug takes up to 65,536
const MAX_BYTES = 4 << 20; // per append, of payloads (base64): under --oplog-max-body
const ATTEMPTS = 6;

export const oplogProcessor = {
  async process(accountInfo, config, componentId, agentId, metadata, firstEntryIndex, entries) {
    const cfg = Object.fromEntries(config);
    const base = (cfg['runner-url'] || '').replace(/\/+$/, '');
    if (!/^https?:\/\//.test(base)) {
      throw `soplug bridge: the installation's runner-url ${JSON.stringify(cfg['runner-url'] || '')} is not an http(s) URL`;
    }
    const auto = cfg['first-index'] === 'auto';
    if (cfg['first-index'] !== undefined && cfg['first-index'] !== '1' && !auto) {
      throw `soplug bridge: first-index ${JSON.stringify(cfg['first-index'])}: want 1 or auto`;
    }
    const worker = await workerID(agentId);
    const url = `${base}/v1/workers/${worker}/oplog`;
    const headers = { 'content-type': 'application/json' };
    if (cfg.token) headers.authorization = `Bearer ${cfg.token}`;

    const first = BigInt(firstEntryIndex);
    for (const part of split(entries.map((e, i) => entry(first + BigInt(i), e)))) {
      const from = part[0].index, to = part[part.length - 1].index;
      const body = { entries: part };
      if (!auto) body.first_index = 1;
      let answer = await append(url, headers, body);
      if (auto && answer.status === 409 && answer.json && answer.json.expected_index === 1 && from > 1n) {
        body.first_index = Number(from); // a new journal, started here
        answer = await append(url, headers, body);
      }
      if (answer.status !== 200) {
        throw `soplug bridge: appending entries ${from} to ${to} of worker ${worker} to ${base}: ${answer.status}: ${answer.text}`;
      }
    }
  },
};

// append posts body, retrying 5xx answers and failed connections with
// backoff (0.1 s doubling to 2 s); it returns the last answer.
async function append(url, headers, body) {
  const text = JSON.stringify(body, (_, v) => (typeof v === 'bigint' ? Number(v) : v));
  let last;
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    if (attempt > 0) await sleep(Math.min(2000, 100 * 2 ** (attempt - 1)));
    try {
      const resp = await fetch(url, { method: 'POST', headers, body: text });
      const answer = { status: resp.status, text: await resp.text() };
      try { answer.json = JSON.parse(answer.text); } catch { /* not JSON */ }
      if (resp.status < 500) return answer;
      last = answer;
    } catch (err) {
      last = { status: 0, text: `the request failed: ${err}` };
    }
  }
  return last;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// split cuts a batch's entries (as entry makes them) into appends of at
// most MAX_ENTRIES entries and about MAX_BYTES of payload: each is
// idempotent on its own, so a failure in the middle leaves a prefix that
// the retried batch resends as identical.
function split(entries) {
  const parts = [];
  let cur = [], bytes = 0;
  for (const e of entries) {
    const n = e.payload.length;
    if (cur.length > 0 && (cur.length >= MAX_ENTRIES || bytes + n > MAX_BYTES)) {
      parts.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(e);
    bytes += n;
  }
  if (cur.length > 0) parts.push(cur);
  return parts;
}

// entry is one oplog entry as soplug's append API takes it.
function entry(index, e) {
  const out = { index, kind: e.tag, payload: base64(utf8(JSON.stringify(e.val === undefined ? null : e.val, jsonValue))) };
  const ts = e.val && e.val.timestamp;
  if (ts && typeof ts.seconds === 'bigint') out.timestamp = rfc3339(ts);
  return out;
}

// jsonValue writes what JSON has no form for: 64-bit integers as decimal
// strings (a number past 2^53 would lose digits), bytes as base64.
function jsonValue(_, v) {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Uint8Array) return base64(v);
  return v;
}

// rfc3339 writes a wasi datetime with its nanoseconds.
function rfc3339(ts) {
  const date = new Date(Number(ts.seconds) * 1000).toISOString().slice(0, 19);
  return `${date}.${String(ts.nanoseconds).padStart(9, '0')}Z`;
}

const HEX = '0123456789ABCDEF';

// workerID encodes a Golem agent as a soplug worker ID (1 to 128 of
// [A-Za-z0-9_.-]), distinct agents never the same: "g." + the component's
// UUID (32 hex digits) + "." + the agent ID with every byte of its UTF-8
// but letters, digits and '-' written _XX (so '_' is _5F and '.' is _2E).
// Where that is over 128 characters: "h." + the UUID + "." + the SHA-256 of
// the agent ID, in hex.
async function workerID(agentId) {
  const u = agentId.componentId.uuid;
  const comp = u.highBits.toString(16).padStart(16, '0') + u.lowBits.toString(16).padStart(16, '0');
  let esc = '';
  for (const b of utf8(agentId.agentId)) {
    const c = String.fromCharCode(b);
    esc += /[A-Za-z0-9-]/.test(c) ? c : '_' + HEX[b >> 4] + HEX[b & 15];
  }
  const id = `g.${comp}.${esc}`;
  if (id.length <= 128) return id;
  const sum = new Uint8Array(await crypto.subtle.digest('SHA-256', utf8(agentId.agentId)));
  let h = '';
  for (const b of sum) h += HEX[b >> 4] + HEX[b & 15];
  return `h.${comp}.${h.toLowerCase()}`;
}

function utf8(s) {
  return new TextEncoder().encode(s);
}

function base64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}
