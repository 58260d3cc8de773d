'use strict';
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { ROOT, closedPort, metricValue, request, runToExit, startService, tmpDir } = require('../test-support/harness');

let api;
let web;
let downWeb;
const dirs = [];

before(async () => {
  const dataDir = tmpDir();
  dirs.push(dataDir);
  api = await startService('api/server.js', { DATA_DIR: dataDir, KILN_RELEASE: 'api-r7' });
  web = await startService('web/server.js', { API_URL: api.url, KILN_RELEASE: 'web-r3' });
  downWeb = await startService('web/server.js', { API_URL: `http://127.0.0.1:${await closedPort()}` });
});

after(async () => {
  for (const svc of [web, downWeb, api]) if (svc) await svc.stop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function form(fields) {
  const body = new URLSearchParams(fields).toString();
  return { method: 'POST', body, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } };
}

test('the home page lists products fetched from the api', async () => {
  const res = await request(`${web.url}/`);
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /^text\/html/);
  assert.match(res.body, /<meta name="viewport" content="width=device-width, initial-scale=1">/);
  assert.match(res.body, /<style>/);
  assert.doesNotMatch(res.body, /<link |<script|src="http|href="http/, 'no external assets');
  const products = JSON.parse((await request(`${api.url}/api/products`)).body).products;
  for (const p of products) assert.ok(res.body.includes(p.name.replace(/&/g, '&amp;')), `lists ${p.name}`);
  assert.match(res.body, /<form method="post" action="\/order">/);
  assert.match(res.body, /web web-r3/);
});

test('placing an order redirects to the order page', async () => {
  const res = await request(`${web.url}/order`, form({ productId: '1', quantity: '2' }));
  assert.equal(res.status, 303, res.body);
  const m = /^\/orders\/(\d+)$/.exec(res.headers.location);
  assert.ok(m, `Location ${res.headers.location}`);

  const order = JSON.parse((await request(`${api.url}/api/orders/${m[1]}`)).body);
  assert.equal(order.productId, 1);
  assert.equal(order.quantity, 2);

  const pageRes = await request(`${web.url}${res.headers.location}`);
  assert.equal(pageRes.status, 200);
  assert.match(pageRes.body, new RegExp(`Order #${m[1]} is placed`));
  assert.ok(pageRes.body.includes(order.productName));
  assert.ok(pageRes.body.includes(`$${(order.totalCents / 100).toFixed(2)}`));
});

test('invalid orders show a 400 page with the reason', async () => {
  const zero = await request(`${web.url}/order`, form({ productId: '1', quantity: '0' }));
  assert.equal(zero.status, 400);
  assert.match(zero.headers['content-type'], /^text\/html/);
  assert.match(zero.body, /quantity must be an integer between 1 and 100/);

  const unknown = await request(`${web.url}/order`, form({ productId: '9999', quantity: '1' }));
  assert.equal(unknown.status, 400);
  assert.match(unknown.body, /product 9999 does not exist/);

  const garbage = await request(`${web.url}/order`, form({ productId: '<script>', quantity: 'lots' }));
  assert.equal(garbage.status, 400);
  assert.doesNotMatch(garbage.body, /<script>/);
});

test('oversized form bodies get 413', async () => {
  const res = await request(`${web.url}/order`, form({ productId: '1', quantity: '1', pad: 'x'.repeat(70 * 1024) }));
  assert.equal(res.status, 413);
});

test('unknown orders and routes are 404', async () => {
  assert.equal((await request(`${web.url}/orders/987654`)).status, 404);
  assert.equal((await request(`${web.url}/orders/abc`)).status, 404);
  const missing = await request(`${web.url}/nowhere`);
  assert.equal(missing.status, 404);
  assert.match(missing.headers['content-type'], /^text\/html/);
});

test('when the api is down the pages say so with 503, and web stays up', async () => {
  const home = await request(`${downWeb.url}/`);
  assert.equal(home.status, 503);
  assert.match(home.body, /temporarily unavailable/);
  const order = await request(`${downWeb.url}/order`, form({ productId: '1', quantity: '1' }));
  assert.equal(order.status, 503);
  assert.equal((await request(`${downWeb.url}/orders/1`)).status, 503);
  const health = await request(`${downWeb.url}/healthz`);
  assert.equal(health.status, 200);
  assert.deepEqual(JSON.parse(health.body), { status: 'ok' });
});

test('exposes Prometheus metrics', async () => {
  await request(`${web.url}/`);
  const res = await request(`${web.url}/metrics`);
  assert.equal(res.status, 200);
  assert.ok(metricValue(res.body, 'http_requests_total{route="/",method="GET",status="200"}') >= 1);
  assert.match(res.body, /http_request_duration_seconds_bucket\{route="\/",method="GET",le="\+Inf"\} \d+/);
  assert.ok(metricValue(res.body, 'process_uptime_seconds') >= 0);
});

test('refuses to start without PORT or API_URL', async () => {
  const noPort = await runToExit('web/server.js', { API_URL: 'http://127.0.0.1:1' });
  assert.notEqual(noPort.code, 0);
  assert.match(noPort.stderr, /PORT environment variable is required/);
  const noApi = await runToExit('web/server.js', { PORT: '0' });
  assert.notEqual(noApi.code, 0);
  assert.match(noApi.stderr, /API_URL environment variable is required/);
});

test('SIGTERM exits 0 quickly', async () => {
  const svc = await startService('web/server.js', { API_URL: api.url });
  const { code, ms } = await svc.stop();
  assert.equal(code, 0);
  assert.ok(ms < 5000, `took ${ms} ms`);
});

test('kit.js is identical in every service', () => {
  const api = fs.readFileSync(path.join(ROOT, 'api', 'kit.js'), 'utf8');
  for (const svc of ['web', 'worker']) {
    assert.equal(fs.readFileSync(path.join(ROOT, svc, 'kit.js'), 'utf8'), api, `${svc}/kit.js differs from api/kit.js`);
  }
});
