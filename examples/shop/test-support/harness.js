'use strict';
// Test harness: starts a service as a child process and waits for it.
//
// Port discovery: the harness passes PORT=0 (and HOST=127.0.0.1); the service
// binds a free port and prints `listening on <port>` on stdout. The harness
// reads that line (with a deadline), then polls GET /healthz until it answers
// 200 (with a deadline). A fixed PORT works the same way.
//
// It lives outside test/ because `node --test test/` runs every .js file there.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { setTimeout: delay } = require('node:timers/promises');

const ROOT = path.resolve(__dirname, '..');
const children = new Set();

process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

// Every wait is bounded, generously: these tests also run as the pipeline of kiln's
// delivery test on a loaded CI machine (two shared cores), where starting node or answering
// one request can take seconds. A passing wait ends as soon as its condition holds; only a
// failure waits this long.
const DEADLINE_MS = 30000;

// Bounded polling: calls fn until it returns a truthy value or the deadline passes.
async function waitFor(fn, { timeoutMs = DEADLINE_MS, intervalMs = 25, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${lastError.message})` : ''}`);
    }
    await delay(intervalMs);
  }
}

function tmpDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'shop-test-'));
}

// A port on which nothing listens (bound, then released).
async function closedPort() {
  const srv = net.createServer();
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

// Plain HTTP request without redirects or connection reuse.
// Returns { status, headers, body }.
function request(url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(DEADLINE_MS, () => req.destroy(new Error(`request to ${url} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

async function json(url, options = {}) {
  const headers = options.body !== undefined ? { 'Content-Type': 'application/json', ...options.headers } : options.headers;
  const body = options.body !== undefined && typeof options.body !== 'string' ? JSON.stringify(options.body) : options.body;
  const res = await request(url, { ...options, headers, body });
  let data = null;
  try {
    data = JSON.parse(res.body);
  } catch {
    data = null;
  }
  return { ...res, data };
}

// Runs a service script to completion (for start-up failures).
function runToExit(script, env, { timeoutMs = DEADLINE_MS } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, script)], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${script} did not exit within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/**
 * Starts `script` (relative to examples/shop) with PORT=0 unless env.PORT is
 * given. Resolves once the port is known and /healthz answered 200.
 */
async function startService(script, env = {}, { waitHealthy = true, timeoutMs = DEADLINE_MS } = {}) {
  const child = spawn(process.execPath, [path.join(ROOT, script)], {
    env: { PATH: process.env.PATH, HOST: '127.0.0.1', PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const out = { stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8').on('data', (c) => (out.stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c) => (out.stderr += c));
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
  });
  let exitInfo = null;
  exited.then((info) => (exitInfo = info));

  const describe = () => `${script}\n--- stdout ---\n${out.stdout}\n--- stderr ---\n${out.stderr}`;
  let port;
  try {
    port = await waitFor(
      () => {
        if (exitInfo) throw new Error(`exited early with ${exitInfo.code ?? exitInfo.signal}`);
        const m = /^listening on (\d+)$/m.exec(out.stdout);
        return m ? Number(m[1]) : null;
      },
      { timeoutMs, what: `"listening on <port>" from ${script}` },
    );
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${err.message}\n${describe()}`, { cause: err });
  }
  const url = `http://127.0.0.1:${port}`;
  if (waitHealthy) {
    await waitFor(async () => (await request(`${url}/healthz`)).status === 200, { timeoutMs, what: `${script} /healthz` });
  }

  return {
    child,
    port,
    url,
    exited,
    output: () => out,
    // SIGTERM, then wait (bounded) for the exit; resolves to { code, signal, ms }.
    async stop({ timeoutMs: stopTimeout = DEADLINE_MS } = {}) {
      if (exitInfo) return { ...exitInfo, ms: 0 };
      const t0 = Date.now();
      child.kill('SIGTERM');
      const timer = delay(stopTimeout, null, { ref: false });
      const info = await Promise.race([exited, timer]);
      if (!info) {
        child.kill('SIGKILL');
        throw new Error(`${script} did not exit within ${stopTimeout} ms of SIGTERM\n${describe()}`);
      }
      return { ...info, ms: Date.now() - t0 };
    },
  };
}

// Reads one sample value from Prometheus text, e.g. metric('x_total{a="b"}').
function metricValue(text, series) {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : undefined;
}

module.exports = { ROOT, closedPort, json, metricValue, request, runToExit, startService, tmpDir, waitFor };
