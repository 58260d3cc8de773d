'use strict';
// Shared HTTP plumbing for the shop services: environment parsing, routing,
// one log line per request, Prometheus metrics, JSON helpers, atomic file
// writes and graceful shutdown on SIGTERM.
//
// api/, web/ and worker/ each carry an identical copy of this file so that a
// service directory is self-contained (CI packages each one alone as
// <service>.tgz). The tests check that the copies stay byte-identical.

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const SHUTDOWN_GRACE_MS = 4000; // then open connections are cut; exit stays < 5 s

// ---------------------------------------------------------------- environment

function fatal(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(1);
}

function requirePort(env = process.env) {
  const raw = env.PORT;
  if (raw === undefined || raw.trim() === '') {
    fatal('the PORT environment variable is required (PORT=0 picks a free port)');
  }
  if (!/^\d+$/.test(raw.trim()) || Number(raw) > 65535) {
    fatal(`PORT must be an integer between 0 and 65535, got "${raw}"`);
  }
  return Number(raw);
}

function requireUrl(name, env = process.env) {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') {
    fatal(`the ${name} environment variable is required (e.g. ${name}=http://127.0.0.1:8080)`);
  }
  let url;
  try {
    url = new URL(raw.trim());
  } catch {
    fatal(`${name} is not a valid URL: "${raw}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    fatal(`${name} must be an http:// or https:// URL, got "${raw}"`);
  }
  return url.href.replace(/\/+$/, '');
}

function numberEnv(name, fallback, { min = -Infinity, max = Infinity, integer = false } = {}, env = process.env) {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
    const kind = integer ? 'an integer' : 'a number';
    fatal(`${name} must be ${kind} between ${min} and ${max}, got "${raw}"`);
  }
  return value;
}

// -------------------------------------------------------------------- metrics

function escapeLabel(value) {
  return String(value).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function formatLabels(labels) {
  const keys = Object.keys(labels);
  if (keys.length === 0) return '';
  return `{${keys.map((k) => `${k}="${escapeLabel(labels[k])}"`).join(',')}}`;
}

class Registry {
  constructor() {
    this.metrics = [];
  }

  counter(name, help) {
    const series = new Map();
    this.metrics.push({ name, help, type: 'counter', render: () => [...series.values()].map((s) => `${name}${formatLabels(s.labels)} ${s.value}`) });
    return {
      inc(labels = {}, by = 1) {
        const key = formatLabels(labels);
        const s = series.get(key) || { labels, value: 0 };
        s.value += by;
        series.set(key, s);
      },
    };
  }

  // collect() returns a number, or an array of { labels, value }.
  gauge(name, help, collect) {
    this.metrics.push({
      name,
      help,
      type: 'gauge',
      render: () => {
        const v = collect();
        const list = Array.isArray(v) ? v : [{ labels: {}, value: v }];
        return list.map((s) => `${name}${formatLabels(s.labels)} ${s.value}`);
      },
    });
  }

  histogram(name, help, buckets = DEFAULT_BUCKETS) {
    const series = new Map();
    this.metrics.push({
      name,
      help,
      type: 'histogram',
      render: () => {
        const lines = [];
        for (const s of series.values()) {
          buckets.forEach((le, i) => {
            lines.push(`${name}_bucket${formatLabels({ ...s.labels, le: String(le) })} ${s.counts[i]}`);
          });
          lines.push(`${name}_bucket${formatLabels({ ...s.labels, le: '+Inf' })} ${s.count}`);
          lines.push(`${name}_sum${formatLabels(s.labels)} ${s.sum}`);
          lines.push(`${name}_count${formatLabels(s.labels)} ${s.count}`);
        }
        return lines;
      },
    });
    return {
      observe(labels, value) {
        const key = formatLabels(labels);
        let s = series.get(key);
        if (!s) {
          s = { labels, counts: buckets.map(() => 0), sum: 0, count: 0 };
          series.set(key, s);
        }
        buckets.forEach((le, i) => {
          if (value <= le) s.counts[i] += 1;
        });
        s.sum += value;
        s.count += 1;
      },
    };
  }

  render() {
    const out = [];
    for (const m of this.metrics) {
      out.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} ${m.type}`, ...m.render());
    }
    return `${out.join('\n')}\n`;
  }
}

// ------------------------------------------------------------------ responses

class HttpError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details;
  }
}

function sendJson(res, status, body, headers = {}) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(data), ...headers });
  res.end(data);
}

function sendText(res, status, contentType, text, headers = {}) {
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

// Reads the whole request body, at most `limit` bytes. A larger body raises
// HttpError(413); moderately larger bodies are drained first so the client
// reliably receives the 413 instead of a connection reset.
function readBody(req, limit = 64 * 1024) {
  const declared = Number(req.headers['content-length']);
  const drainCap = limit * 16;
  return new Promise((resolve, reject) => {
    if (Number.isFinite(declared) && declared > drainCap) {
      req.resume();
      reject(new HttpError(413, `request body too large (limit ${limit} bytes)`));
      return;
    }
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) tooLarge = true;
      if (!tooLarge) chunks.push(chunk);
      if (size > drainCap) {
        req.pause();
        reject(new HttpError(413, `request body too large (limit ${limit} bytes)`));
      }
    });
    req.on('end', () => {
      if (tooLarge) reject(new HttpError(413, `request body too large (limit ${limit} bytes)`));
      else resolve(Buffer.concat(chunks));
    });
    req.on('error', reject);
  });
}

// ------------------------------------------------------------------ files

// Writes `data` to `file` atomically: temp file in the same directory, fsync,
// rename over the target, then fsync the directory (best effort).
function writeFileAtomic(file, data) {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  const fd = fs.openSync(tmp, 'w', 0o644);
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  try {
    const dfd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch {
    // directories cannot be fsynced on every platform
  }
}

// ------------------------------------------------------------------ service

function compile(pattern) {
  const names = [];
  const source = pattern.replace(/:([a-zA-Z]+)/g, (_, name) => {
    names.push(name);
    return '([^/]+)';
  });
  return { regex: new RegExp(`^${source}$`), names };
}

/**
 * createService({ name, routes, health, before, renderError })
 *   routes:      [[method, pattern, async handler(ctx)]], pattern like '/api/orders/:id'
 *   health():    -> { ok: boolean, reason?: string }   (default: always ok)
 *   before(ctx): optional hook; return true if it answered the request itself
 *   renderError(ctx, status, message, details): how errors look (default JSON)
 *   onShutdown(): optional async hook run on SIGTERM while connections drain
 * Returns { server, registry, release, start(port, host) }.
 * /healthz and /metrics are built in.
 */
function createService(options) {
  const { name, routes = [], health = () => ({ ok: true }), before, onShutdown } = options;
  const renderError = options.renderError || ((ctx, status, message, details) => sendJson(ctx.res, status, details ? { error: message, details } : { error: message }));
  const release = process.env.KILN_RELEASE || 'dev';
  const inFlight = new Set();
  let shuttingDown = false;
  const startedAt = Date.now();
  const registry = new Registry();
  const requests = registry.counter('http_requests_total', 'HTTP requests handled, by route, method and status code.');
  const duration = registry.histogram('http_request_duration_seconds', 'HTTP request latency in seconds, by route and method.');
  registry.gauge('process_uptime_seconds', 'Seconds since the process started.', () => (Date.now() - startedAt) / 1000);
  registry.gauge('app_info', 'Service name and release (always 1).', () => [{ labels: { service: name, release }, value: 1 }]);
  registry.gauge('http_requests_in_flight', 'HTTP requests being handled right now (including this scrape).', () => inFlight.size);

  const compiled = routes.map(([method, pattern, handler]) => ({ method, pattern, handler, ...compile(pattern) }));
  compiled.push(
    {
      method: 'GET',
      pattern: '/healthz',
      ...compile('/healthz'),
      handler: ({ res }) => {
        const h = health();
        if (h.ok) sendJson(res, 200, { status: 'ok' });
        else sendJson(res, 503, { status: 'unhealthy', reason: h.reason || 'unhealthy' });
      },
    },
    {
      method: 'GET',
      pattern: '/metrics',
      ...compile('/metrics'),
      handler: ({ res }) => sendText(res, 200, 'text/plain; version=0.0.4; charset=utf-8', registry.render()),
    },
  );


  async function handle(req, res) {
    const started = process.hrtime.bigint();
    const ctx = { req, res, params: {}, route: 'unmatched', url: null, release };
    inFlight.add(res);
    res.setHeader('X-Release', release);
    if (shuttingDown) res.setHeader('Connection', 'close');
    res.once('close', () => {
      inFlight.delete(res);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const status = res.writableFinished ? res.statusCode : 'aborted';
      requests.inc({ route: ctx.route, method: req.method, status: String(status) });
      duration.observe({ route: ctx.route, method: req.method }, seconds);
      const line = { time: new Date().toISOString(), service: name, method: req.method, path: req.url, route: ctx.route, status, duration_ms: Math.round(seconds * 1e6) / 1e3 };
      process.stdout.write(`${JSON.stringify(line)}\n`);
      if (shuttingDown) server.closeIdleConnections();
    });

    try {
      ctx.url = new URL(req.url, 'http://localhost');
      if (before && (await before(ctx))) return;
      const allowed = [];
      for (const r of compiled) {
        const m = r.regex.exec(ctx.url.pathname);
        if (!m) continue;
        if (r.method !== req.method && !(r.method === 'GET' && req.method === 'HEAD')) {
          allowed.push(r.method);
          continue;
        }
        ctx.route = r.pattern;
        r.names.forEach((n, i) => {
          try {
            ctx.params[n] = decodeURIComponent(m[i + 1]);
          } catch {
            throw new HttpError(400, `malformed path parameter ${n}`);
          }
        });
        await r.handler(ctx);
        return;
      }
      if (allowed.length > 0) {
        res.setHeader('Allow', [...new Set(allowed)].join(', '));
        throw new HttpError(405, 'method not allowed');
      }
      throw new HttpError(404, 'not found');
    } catch (err) {
      if (!(err instanceof HttpError)) {
        process.stderr.write(`${name}: unhandled error on ${req.method} ${req.url}: ${err && err.stack ? err.stack : err}\n`);
      }
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const status = err instanceof HttpError ? err.status : 500;
      if (status === 413) res.setHeader('Connection', 'close');
      renderError(ctx, status, err instanceof HttpError ? err.message : 'internal error', err instanceof HttpError ? err.details : undefined);
    }
  }

  const server = http.createServer((req, res) => {
    handle(req, res);
  });

  async function shutdown(signal) {
    if (shuttingDown) return;
    shuttingDown = true;
    process.stdout.write(`${name}: received ${signal}, draining ${inFlight.size} in-flight request(s)\n`);
    // In-flight responses that have not started yet will close their connection.
    for (const res of inFlight) if (!res.headersSent) res.setHeader('Connection', 'close');
    const force = setTimeout(() => {
      process.stdout.write(`${name}: grace period over, closing remaining connections\n`);
      server.closeAllConnections();
    }, SHUTDOWN_GRACE_MS);
    force.unref();
    const closed = new Promise((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    try {
      await Promise.all([closed, onShutdown ? onShutdown() : null]);
    } catch (err) {
      process.stderr.write(`${name}: error during shutdown: ${err && err.stack ? err.stack : err}\n`);
    }
    process.stdout.write(`${name}: shutdown complete\n`);
    process.exit(0);
  }

  function start(port, host = process.env.HOST || undefined) {
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        // Readiness contract used by the tests: exactly this line, once.
        process.stdout.write(`listening on ${server.address().port}\n`);
        process.on('SIGTERM', () => shutdown('SIGTERM'));
        process.on('SIGINT', () => shutdown('SIGINT'));
        resolve(server.address().port);
      });
    });
  }

  return { server, registry, release, start, isShuttingDown: () => shuttingDown };
}

module.exports = {
  HttpError,
  Registry,
  createService,
  fatal,
  numberEnv,
  readBody,
  requirePort,
  requireUrl,
  sendJson,
  sendText,
  writeFileAtomic,
};
