'use strict';
// Shop worker: polls the api for orders and "fulfils" each one exactly once by
// appending a JSON line to DATA_DIR/fulfilled.log. Processed order ids are
// kept in DATA_DIR/worker-state.json (written atomically); on start the ids
// already present in fulfilled.log are merged in too, so a crash between the
// log append and the state write cannot fulfil an order twice.
//
// Env: PORT (required, 0 = any free port), HOST, API_URL (required),
//      INTERVAL_MS (default 2000), DATA_DIR (default ./data), KILN_RELEASE.

const fs = require('node:fs');
const path = require('node:path');
const { createService, fatal, numberEnv, requirePort, requireUrl, writeFileAtomic } = require('./kit');

const port = requirePort();
const apiUrl = requireUrl('API_URL');
const intervalMs = numberEnv('INTERVAL_MS', 2000, { min: 10, max: 3600000, integer: true });
const dataDir = path.resolve(process.env.DATA_DIR || './data');
const logFile = path.join(dataDir, 'fulfilled.log');
const stateFile = path.join(dataDir, 'worker-state.json');
const pollTimeoutMs = Math.min(Math.max(intervalMs, 1000), 10000);

// ---------------------------------------------------------------------- state

function loadProcessed() {
  const ids = new Set();
  if (fs.existsSync(stateFile)) {
    let state;
    try {
      state = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
    } catch (err) {
      fatal(`cannot read ${stateFile}: ${err.message}`);
    }
    if (!state || !Array.isArray(state.processedOrderIds)) fatal(`${stateFile} has no processedOrderIds array`);
    for (const id of state.processedOrderIds) ids.add(id);
  }
  if (fs.existsSync(logFile)) {
    for (const line of fs.readFileSync(logFile, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      try {
        const entry = JSON.parse(line);
        if (entry && entry.orderId !== undefined) ids.add(entry.orderId);
      } catch {
        // a torn last line from a crash: the order is simply fulfilled again
      }
    }
  }
  return ids;
}

function saveProcessed(ids) {
  writeFileAtomic(stateFile, `${JSON.stringify({ processedOrderIds: [...ids].sort((a, b) => a - b) })}\n`);
}

function appendFulfilled(order) {
  const line = `${JSON.stringify({ orderId: order.id, productId: order.productId, quantity: order.quantity, fulfilledAt: new Date().toISOString() })}\n`;
  const fd = fs.openSync(logFile, 'a');
  try {
    fs.writeSync(fd, line);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

try {
  fs.mkdirSync(dataDir, { recursive: true });
} catch (err) {
  fatal(`cannot create DATA_DIR ${dataDir}: ${err.message}`);
}
const processed = loadProcessed();

// ----------------------------------------------------------------------- loop

const startedAt = Date.now();
let lastSuccessAt = startedAt; // start time before the first successful poll
let lastPollDoneAt = startedAt; // success or failure: the loop is turning
let stopping = false;
let timer = null;
let currentPoll = null;
let polls;
let fulfilled;

async function poll() {
  try {
    const res = await fetch(`${apiUrl}/api/orders`, { signal: AbortSignal.timeout(pollTimeoutMs) });
    if (res.status !== 200) throw new Error(`GET /api/orders answered ${res.status}`);
    const body = await res.json();
    if (!body || !Array.isArray(body.orders)) throw new Error('GET /api/orders did not return {"orders": [...]}');
    const fresh = body.orders.filter((o) => o && Number.isInteger(o.id) && !processed.has(o.id)).sort((a, b) => a.id - b.id);
    for (const order of fresh) {
      appendFulfilled(order);
      processed.add(order.id);
      fulfilled.inc();
      process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), service: 'worker', event: 'fulfilled', orderId: order.id })}\n`);
    }
    if (fresh.length > 0) saveProcessed(processed);
    lastSuccessAt = Date.now();
    polls.inc({ result: 'ok' });
  } catch (err) {
    polls.inc({ result: 'error' });
    process.stderr.write(`worker: poll failed: ${err.cause ? err.cause.code || err.cause.message : err.message}\n`);
  }
}

async function tick() {
  currentPoll = poll();
  await currentPoll;
  currentPoll = null;
  lastPollDoneAt = Date.now();
  if (!stopping) timer = setTimeout(tick, intervalMs);
}

// Unhealthy only when the worker itself cannot work: its poll loop has stopped turning (each
// poll ends within pollTimeoutMs, so a loop that finished none for three rounds is wedged).
// An api that is down or slow is not the worker's fault, and restarting the worker (this is
// also its liveness check) would not fix it: failed polls show in worker_polls_total and
// worker_last_success_timestamp_seconds instead. (It used to answer 503 after three intervals
// without a successful poll: a loaded api, polls timing out at 1 s, and the worker was
// restarted for nothing.)
const wedgedAfterMs = 3 * (intervalMs + pollTimeoutMs);

function health() {
  const age = Date.now() - lastPollDoneAt;
  if (stopping || age < wedgedAfterMs) return { ok: true };
  return { ok: false, reason: `no poll finished for ${Math.round(age)} ms (limit ${wedgedAfterMs} ms)` };
}

async function onShutdown() {
  stopping = true;
  clearTimeout(timer);
  if (currentPoll) await currentPoll;
}

const service = createService({ name: 'worker', health, onShutdown });
polls = service.registry.counter('worker_polls_total', 'Polls of GET /api/orders, by result.');
fulfilled = service.registry.counter('worker_orders_fulfilled_total', 'Orders fulfilled by this process.');
service.registry.gauge('worker_processed_orders', 'Order ids remembered as processed.', () => processed.size);
service.registry.gauge('worker_last_success_timestamp_seconds', 'Unix time of the last successful poll (start time before the first).', () => lastSuccessAt / 1000);

service
  .start(port)
  .then(() => tick())
  .catch((err) => fatal(`cannot listen on port ${port}: ${err.message}`));
