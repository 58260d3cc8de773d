'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { closedPort, json, metricValue, request, runToExit, startService, tmpDir, waitFor } = require('../test-support/harness');

let api;
let dataDir;
const dirs = [];

before(async () => {
  dataDir = tmpDir();
  dirs.push(dataDir);
  api = await startService('api/server.js', { DATA_DIR: dataDir, KILN_RELEASE: 'test-r1' });
});

after(async () => {
  if (api) await api.stop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

test('healthz, version and X-Release header', async () => {
  const health = await json(`${api.url}/healthz`);
  assert.equal(health.status, 200);
  assert.deepEqual(health.data, { status: 'ok' });

  const version = await json(`${api.url}/api/version`);
  assert.equal(version.status, 200);
  assert.equal(version.data.release, 'test-r1');
  assert.equal(version.headers['x-release'], 'test-r1');
});

test('lists and fetches seeded products, 404 for unknown ones', async () => {
  const list = await json(`${api.url}/api/products`);
  assert.equal(list.status, 200);
  assert.ok(list.data.products.length >= 3, 'seeded products');
  const first = list.data.products[0];

  const one = await json(`${api.url}/api/products/${first.id}`);
  assert.equal(one.status, 200);
  assert.deepEqual(one.data, first);

  for (const id of ['9999', 'abc', '0', '-1']) {
    const missing = await json(`${api.url}/api/products/${id}`);
    assert.equal(missing.status, 404, `product ${id}`);
    assert.match(missing.data.error, /not found/);
  }
});

test('creates, fetches and lists an order', async () => {
  const created = await json(`${api.url}/api/orders`, { method: 'POST', body: { productId: 2, quantity: 3 } });
  assert.equal(created.status, 201, created.body);
  assert.equal(created.data.productId, 2);
  assert.equal(created.data.quantity, 3);
  assert.equal(created.data.totalCents, created.data.unitPriceCents * 3);
  assert.equal(created.headers.location, `/api/orders/${created.data.id}`);

  const fetched = await json(`${api.url}/api/orders/${created.data.id}`);
  assert.equal(fetched.status, 200);
  assert.deepEqual(fetched.data, created.data);

  const list = await json(`${api.url}/api/orders`);
  assert.equal(list.status, 200);
  assert.ok(list.data.orders.some((o) => o.id === created.data.id));

  assert.equal((await json(`${api.url}/api/orders/424242`)).status, 404);
  assert.equal((await json(`${api.url}/api/orders/x`)).status, 404);
});

test('rejects invalid orders with 400 and a JSON error', async () => {
  const cases = [
    [{ productId: 1, quantity: 0 }, /quantity/],
    [{ productId: 1, quantity: 101 }, /quantity/],
    [{ productId: 1, quantity: 1.5 }, /quantity/],
    [{ productId: 1, quantity: '2' }, /quantity/],
    [{ productId: 1 }, /quantity/],
    [{ productId: 9999, quantity: 1 }, /does not exist/],
    [{ productId: '1', quantity: 1 }, /productId/],
    [[1, 2], /JSON object/],
    [null, /JSON object/],
  ];
  for (const [body, pattern] of cases) {
    const res = await json(`${api.url}/api/orders`, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
    assert.equal(res.status, 400, `body ${JSON.stringify(body)}`);
    assert.equal(typeof res.data.error, 'string');
    assert.match(JSON.stringify(res.data), pattern, `body ${JSON.stringify(body)}`);
  }
  const broken = await json(`${api.url}/api/orders`, { method: 'POST', body: '{"productId":', headers: { 'Content-Type': 'application/json' } });
  assert.equal(broken.status, 400);
  assert.match(broken.data.error, /not valid JSON/);
});

test('answers 413 to bodies over 64 KiB', async () => {
  const big = JSON.stringify({ productId: 1, quantity: 1, pad: 'x'.repeat(70 * 1024) });
  const res = await json(`${api.url}/api/orders`, { method: 'POST', body: big, headers: { 'Content-Type': 'application/json' } });
  assert.equal(res.status, 413);
  assert.match(res.data.error, /too large/);
  // the service is still fine afterwards
  assert.equal((await request(`${api.url}/healthz`)).status, 200);
});

test('unknown routes are 404, wrong methods 405', async () => {
  const missing = await json(`${api.url}/nope`);
  assert.equal(missing.status, 404);
  assert.deepEqual(missing.data, { error: 'not found' });
  const wrong = await json(`${api.url}/api/products`, { method: 'DELETE' });
  assert.equal(wrong.status, 405);
  assert.equal(wrong.headers.allow, 'GET');
});

test('exposes Prometheus metrics', async () => {
  await request(`${api.url}/api/products`);
  const res = await request(`${api.url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /^text\/plain/);
  assert.match(res.body, /# TYPE http_requests_total counter/);
  assert.ok(metricValue(res.body, 'http_requests_total{route="/api/products",method="GET",status="200"}') >= 1);
  assert.match(res.body, /# TYPE http_request_duration_seconds histogram/);
  assert.match(res.body, /http_request_duration_seconds_bucket\{route="\/api\/products",method="GET",le="0.1"\} \d+/);
  assert.match(res.body, /http_request_duration_seconds_bucket\{route="\/api\/products",method="GET",le="\+Inf"\} \d+/);
  assert.match(res.body, /http_request_duration_seconds_count\{route="\/api\/products",method="GET"\} \d+/);
  assert.ok(metricValue(res.body, 'process_uptime_seconds') >= 0);
  assert.ok(metricValue(res.body, 'shop_orders_created_total') >= 1);
});

test('store survives a restart on a fixed PORT and is written atomically', async () => {
  const dir = tmpDir();
  dirs.push(dir);
  const port = await closedPort();
  const first = await startService('api/server.js', { DATA_DIR: dir, PORT: String(port) });
  assert.equal(first.port, port);
  const created = await json(`${first.url}/api/orders`, { method: 'POST', body: { productId: 1, quantity: 5 } });
  assert.equal(created.status, 201);
  const stopped = await first.stop();
  assert.equal(stopped.code, 0);

  const files = fs.readdirSync(dir);
  assert.deepEqual(files, ['store.json'], 'no temp files left behind');
  const onDisk = JSON.parse(fs.readFileSync(path.join(dir, 'store.json'), 'utf8'));
  assert.equal(onDisk.orders.length, 1);

  const second = await startService('api/server.js', { DATA_DIR: dir, PORT: String(port) });
  try {
    const fetched = await json(`${second.url}/api/orders/${created.data.id}`);
    assert.deepEqual(fetched.data, created.data);
    const next = await json(`${second.url}/api/orders`, { method: 'POST', body: { productId: 1, quantity: 1 } });
    assert.equal(next.data.id, created.data.id + 1);
  } finally {
    assert.equal((await second.stop()).code, 0);
  }
});

test('refuses to start without PORT or with a corrupt store', async () => {
  const noPortDir = tmpDir();
  dirs.push(noPortDir);
  const noPort = await runToExit('api/server.js', { DATA_DIR: noPortDir });
  assert.notEqual(noPort.code, 0);
  assert.match(noPort.stderr, /PORT environment variable is required/);

  const dir = tmpDir();
  dirs.push(dir);
  fs.writeFileSync(path.join(dir, 'store.json'), '{ not json');
  const corrupt = await runToExit('api/server.js', { DATA_DIR: dir, PORT: '0' });
  assert.notEqual(corrupt.code, 0);
  assert.match(corrupt.stderr, /cannot read store/);
  assert.equal(fs.readFileSync(path.join(dir, 'store.json'), 'utf8'), '{ not json', 'corrupt store left untouched');

  const badRate = await runToExit('api/server.js', { DATA_DIR: dir, PORT: '0', FAIL_RATE: '2' });
  assert.notEqual(badRate.code, 0);
  assert.match(badRate.stderr, /FAIL_RATE/);
});

test('FAIL_RATE=1 fails /api/* with 500 but not /healthz', async () => {
  const dir = tmpDir();
  dirs.push(dir);
  const faulty = await startService('api/server.js', { DATA_DIR: dir, FAIL_RATE: '1' });
  try {
    const res = await json(`${faulty.url}/api/products`);
    assert.equal(res.status, 500);
    assert.match(res.data.error, /injected/);
    assert.equal((await request(`${faulty.url}/healthz`)).status, 200);
    const metrics = await request(`${faulty.url}/metrics`);
    assert.ok(metricValue(metrics.body, 'http_requests_total{route="unmatched",method="GET",status="500"}') >= 1);
    assert.ok(metricValue(metrics.body, 'shop_injected_failures_total') >= 1);
  } finally {
    await faulty.stop();
  }
});

test('FAIL_AFTER_SECONDS delays injected failures', async () => {
  const dir = tmpDir();
  dirs.push(dir);
  // Failures start 5 s after the process started, which is after `spawned`. A first request
  // within those 5 s must succeed; on a machine so loaded that the service took longer to
  // start, a failure is allowed only once 5 s have passed since `spawned` (it cannot have come
  // earlier from a correct server), so the test does not depend on the machine's speed.
  const spawned = Date.now();
  const faulty = await startService('api/server.js', { DATA_DIR: dir, FAIL_RATE: '1', FAIL_AFTER_SECONDS: '5' });
  try {
    const first = (await request(`${faulty.url}/api/products`)).status;
    const elapsed = Date.now() - spawned;
    if (first !== 200) {
      assert.equal(first, 500);
      assert.ok(elapsed >= 5000, `an injected failure after ${elapsed} ms, before FAIL_AFTER_SECONDS`);
    }
    await waitFor(async () => (await request(`${faulty.url}/api/products`)).status === 500, { intervalMs: 100, what: 'failures to start' });
  } finally {
    await faulty.stop();
  }
});

test('SIGTERM: stops accepting, finishes the in-flight request, exits 0', async () => {
  const dir = tmpDir();
  dirs.push(dir);
  const svc = await startService('api/server.js', { DATA_DIR: dir });
  const body = JSON.stringify({ productId: 3, quantity: 2 });

  // Start a POST and send only part of its body: the request is now in flight.
  let finish;
  const pending = new Promise((resolve, reject) => {
    const req = http.request(`${svc.url}/api/orders`, { method: 'POST', agent: false, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.write(body.slice(0, 10));
    finish = () => req.end(body.slice(10));
  });
  await waitFor(
    async () => metricValue((await request(`${svc.url}/metrics`)).body, 'http_requests_in_flight') >= 2,
    { what: 'the POST to be in flight' },
  );

  svc.child.kill('SIGTERM');
  // New connections are refused once the listener is closed.
  await waitFor(
    () =>
      new Promise((resolve) => {
        const s = net.connect(svc.port, '127.0.0.1');
        s.on('connect', () => {
          s.destroy();
          resolve(false);
        });
        s.on('error', (err) => resolve(err.code === 'ECONNREFUSED'));
      }),
    { what: 'listener to close' },
  );

  finish();
  const res = await pending;
  assert.equal(res.status, 201, res.body);
  assert.equal(res.headers.connection, 'close');
  const exit = await Promise.race([svc.exited, new Promise((r) => setTimeout(r, 30000, null).unref())]);
  assert.ok(exit, 'exited within 30 s');
  assert.equal(exit.code, 0);
  assert.match(svc.output().stdout, /draining 1 in-flight/);
  const onDisk = JSON.parse(fs.readFileSync(path.join(dir, 'store.json'), 'utf8'));
  assert.equal(onDisk.orders.length, 1, 'the in-flight order was stored');
});

test('replicas sharing a DATA_DIR see each other\'s orders and never lose one', async () => {
  const shared = tmpDir();
  dirs.push(shared);
  const a = await startService('api/server.js', { DATA_DIR: shared });
  const b = await startService('api/server.js', { DATA_DIR: shared });
  try {
    const post = (svc, productId) => json(`${svc.url}/api/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ productId, quantity: 1 }),
    });
    const placed = await Promise.all([post(a, 1), post(b, 2), post(a, 3), post(b, 1), post(a, 2), post(b, 3)]);
    for (const p of placed) assert.equal(p.status, 201);
    const ids = placed.map((p) => p.data.id ?? p.data.order?.id);
    assert.equal(new Set(ids).size, 6, `six distinct order ids: ${ids}`);
    const fromA = await json(`${a.url}/api/orders`);
    const fromB = await json(`${b.url}/api/orders`);
    const count = (r) => (Array.isArray(r.data) ? r.data : r.data.orders).length;
    assert.equal(count(fromA), 6);
    assert.equal(count(fromB), 6);
  } finally {
    await a.stop();
    await b.stop();
  }
});
