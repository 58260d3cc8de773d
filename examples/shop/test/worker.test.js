'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { ROOT, closedPort, json, metricValue, request, runToExit, startService, tmpDir, waitFor } = require('../test-support/harness');

let api;
const dirs = [];

before(async () => {
  const dataDir = tmpDir();
  dirs.push(dataDir);
  api = await startService('api/server.js', { DATA_DIR: dataDir });
});

after(async () => {
  if (api) await api.stop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function fulfilledIds(dir) {
  const file = path.join(dir, 'fulfilled.log');
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l).orderId);
}

async function placeOrder(productId, quantity) {
  const res = await json(`${api.url}/api/orders`, { method: 'POST', body: { productId, quantity } });
  assert.equal(res.status, 201, res.body);
  return res.data;
}

async function okPolls(worker) {
  return metricValue((await request(`${worker.url}/metrics`)).body, 'worker_polls_total{result="ok"}') || 0;
}

// Waits until the worker has completed `n` more successful polls.
async function waitForMorePolls(worker, n) {
  const start = await okPolls(worker);
  await waitFor(async () => (await okPolls(worker)) >= start + n, { what: `${n} more polls` });
}

test('fulfils each order exactly once, across restarts', async () => {
  const dir = tmpDir();
  dirs.push(dir);
  const env = { API_URL: api.url, DATA_DIR: dir, INTERVAL_MS: '50' };
  const before = (await json(`${api.url}/api/orders`)).data.orders.map((o) => o.id);

  const a = await placeOrder(1, 1);
  let worker = await startService('worker/worker.js', env);
  await waitFor(() => fulfilledIds(dir).includes(a.id), { what: `order ${a.id} fulfilled` });
  await waitForMorePolls(worker, 2);
  assert.equal((await worker.stop()).code, 0);
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'worker-state.json'), 'utf8'));
  assert.ok(state.processedOrderIds.includes(a.id));

  const b = await placeOrder(2, 4);
  worker = await startService('worker/worker.js', env);
  await waitFor(() => fulfilledIds(dir).includes(b.id), { what: `order ${b.id} fulfilled` });
  await waitForMorePolls(worker, 3);
  const metrics = (await request(`${worker.url}/metrics`)).body;
  assert.equal(metricValue(metrics, 'worker_orders_fulfilled_total'), 1, 'the restarted worker fulfilled only the new order');
  assert.equal((await worker.stop()).code, 0);

  const expected = [...before, a.id, b.id].sort((x, y) => x - y);
  assert.deepEqual(fulfilledIds(dir), expected, 'each order exactly once');
});

test('does not fulfil twice even if the state file is lost (fulfilled.log is replayed)', async () => {
  const dir = tmpDir();
  dirs.push(dir);
  const env = { API_URL: api.url, DATA_DIR: dir, INTERVAL_MS: '50' };
  await placeOrder(3, 2);
  let worker = await startService('worker/worker.js', env);
  const all = (await json(`${api.url}/api/orders`)).data.orders.map((o) => o.id);
  await waitFor(() => fulfilledIds(dir).length === all.length, { what: 'all orders fulfilled' });
  assert.equal((await worker.stop()).code, 0);

  fs.rmSync(path.join(dir, 'worker-state.json'));
  worker = await startService('worker/worker.js', env);
  await waitForMorePolls(worker, 3);
  assert.equal((await worker.stop()).code, 0);
  assert.deepEqual(fulfilledIds(dir), all);
});

test('stays healthy while the api is unreachable (not its fault), and counts failed polls', async () => {
  const dir = tmpDir();
  dirs.push(dir);
  const worker = await startService('worker/worker.js', { API_URL: `http://127.0.0.1:${await closedPort()}`, DATA_DIR: dir, INTERVAL_MS: '50' }, { waitHealthy: false });
  try {
    // Ten failed polls: far more than the three intervals after which it used to answer 503.
    await waitFor(
      async () => metricValue((await request(`${worker.url}/metrics`)).body, 'worker_polls_total{result="error"}') >= 10 || null,
      { what: 'ten failed polls' },
    );
    const res = await request(`${worker.url}/healthz`);
    assert.equal(res.status, 200, res.body);
    assert.equal(JSON.parse(res.body).status, 'ok');
    const metrics = (await request(`${worker.url}/metrics`)).body;
    assert.equal(metricValue(metrics, 'worker_polls_total{result="ok"}') || 0, 0);
    assert.match(metrics, /http_request_duration_seconds_bucket\{route="\/healthz",method="GET",le="0.005"\} \d+/);
    assert.ok(metricValue(metrics, 'process_uptime_seconds') >= 0);
  } finally {
    assert.equal((await worker.stop()).code, 0);
  }
});

test('refuses to start without PORT or API_URL', async () => {
  const noPortDir = tmpDir();
  dirs.push(noPortDir);
  const noPort = await runToExit('worker/worker.js', { API_URL: 'http://127.0.0.1:1', DATA_DIR: noPortDir });
  assert.notEqual(noPort.code, 0);
  assert.match(noPort.stderr, /PORT environment variable is required/);
  const noApi = await runToExit('worker/worker.js', { PORT: '0' });
  assert.notEqual(noApi.code, 0);
  assert.match(noApi.stderr, /API_URL environment variable is required/);
});

test('kit.js is identical in every service', () => {
  const api = fs.readFileSync(path.join(ROOT, 'api', 'kit.js'), 'utf8');
  assert.equal(fs.readFileSync(path.join(ROOT, 'worker', 'kit.js'), 'utf8'), api, 'worker/kit.js differs from api/kit.js');
});
