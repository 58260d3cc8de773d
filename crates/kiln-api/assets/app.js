// kiln's dashboard: a hash-routed page over the control plane's read-only JSON API.
// Plain JavaScript, no dependencies, no build step. Charts are SVG drawn here.
'use strict';

const REFRESH_MS = 5000;
const main = document.getElementById('main');

const esc = (value) => String(value ?? '').replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

async function api(path) {
  const response = await fetch(path, { headers: { accept: 'application/json' } });
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.text();
}

// ---- formatting -------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, '0');

function clock(ms, withDate) {
  const d = new Date(ms);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return withDate ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}` : time;
}

function when(text) {
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) return esc(text);
  const d = new Date(ms);
  return `<time datetime="${esc(text)}" title="${esc(d.toString())}">${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}</time>`;
}

function duration(ms) {
  if (ms == null) return '–';
  const s = ms / 1000;
  if (s < 1) return `${Math.round(ms)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(Math.floor(s % 60))}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(n < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

function number(n, digits) {
  if (n === 0) return '0';
  const a = Math.abs(n);
  if (a >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (a >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n.toFixed(a < 10 ? digits : a < 100 ? 1 : 0);
}

const UNITS = {
  rps: (v) => `${number(v, 2)}/s`,
  ratio: (v) => `${(v * 100).toFixed(v < 0.1 ? 2 : 1)}%`,
  seconds: (v) => (v < 1 ? `${(v * 1000).toFixed(v < 0.01 ? 2 : 1)} ms` : `${v.toFixed(2)} s`),
  cores: (v) => number(v, 3),
  bytes: (v) => bytes(v),
  count: (v) => number(v, 0),
  per_day: (v) => `${number(v, 2)}/day`,
  duration: (v) => duration(v * 1000),
};

const shortRelease = (r) => (r ? r.replace(/^sha256:/, '').slice(0, 12) : '–');

function percent(ratio) {
  if (ratio == null) return '–';
  if (ratio === 1) return '100%';
  return `${(Math.floor(ratio * 10000) / 100).toFixed(2)}%`;
}

function stateClass(state) {
  if (state === 'ready' || state === 'success' || state === 'succeeded') return 'ok';
  if (['starting', 'running', 'stopping', 'in_progress'].includes(state)) return 'warn';
  if (state === 'stopped' || state === 'skipped' || state === 'cancelled') return 'idle';
  return 'bad';
}

const pill = (text, cls) => `<span class="pill ${cls || stateClass(text)}">${esc(text)}</span>`;

// ---- charts -----------------------------------------------------------------------------

const PALETTE = ['#3274d9', '#56a64b', '#e0752d', '#a352cc', '#d6a800', '#1fa4b5', '#e04f8c', '#7a869a'];
const CLASS_COLOURS = { '1xx': '#7a869a', '2xx': '#56a64b', '3xx': '#3274d9', '4xx': '#d6a800', '5xx': '#e02f44' };
const LEGEND_COLOURS = { p50: '#56a64b', p95: '#d6a800', p99: '#e02f44', '5xx / all': '#e02f44' };

function niceCeiling(v) {
  if (!(v > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(v));
  const f = v / power;
  const nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
  return nice * power;
}

function legendOf(template, labels) {
  return template.replace(/\{(\w+)\}/g, (_, name) => labels[name] ?? '');
}

// What each chart drew, by element id, for the hover read-out.
const lastGrids = new Map();

// lines: [{ name, colour, points: [[ms, v], ...] }]
// A narrow screen gets a narrower drawing, so its labels stay legible when scaled to fit.
const chartWidth = () => (main.clientWidth < 600 ? 400 : 640);

function chartSvg(lines, grid, unit, marks) {
  const W = chartWidth(); const H = 230;
  const L = 64; const R = 14; const T = 12; const B = 28;
  const format = UNITS[unit] || ((v) => number(v, 2));
  let max = 0;
  for (const line of lines) for (const [, v] of line.points) if (v > max) max = v;
  // Four gridlines at round values: the step is rounded, not the top.
  let tick = max > 0 ? niceCeiling(max / 4) : unit === 'ratio' ? 0.0025 : 0.25;
  if (unit === 'count') tick = Math.max(1, tick);
  const top = tick * 4;
  const x = (t) => L + ((t - grid.start) / Math.max(1, grid.end - grid.start)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const parts = [`<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" preserveAspectRatio="xMidYMid meet">`];
  for (let i = 0; i <= 4; i += 1) {
    const v = (top * i) / 4;
    const yy = y(v).toFixed(1);
    parts.push(`<line class="grid" x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}"/>`);
    parts.push(`<text class="axis" x="${L - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${esc(format(v))}</text>`);
  }
  const span = grid.end - grid.start;
  const withDate = span > 86400000;
  for (let i = 0; i <= 5; i += 1) {
    const t = grid.start + (span * i) / 5;
    const anchor = i === 0 ? 'start' : i === 5 ? 'end' : 'middle';
    parts.push(`<text class="axis" x="${x(t).toFixed(1)}" y="${H - 8}" text-anchor="${anchor}">${clock(t, withDate)}</text>`);
  }
  for (const mark of marks) {
    if (mark.time_ms < grid.start || mark.time_ms > grid.end) continue;
    const xx = x(mark.time_ms).toFixed(1);
    const cls = mark.kind === 'deploy' ? 'deploy' : 'run';
    const failed = /fail|roll|cancel|interrupt/.test(mark.result);
    parts.push(`<g class="mark ${cls}${failed ? ' failed' : ''}"><title>${esc(`${clock(mark.time_ms, true)} ${mark.title} · ${mark.result}`)}</title>`
      + `<line x1="${xx}" x2="${xx}" y1="${T}" y2="${H - B}"/><path d="M${xx} ${T} l-5 -7 h10 z"/></g>`);
  }
  for (const line of lines) {
    let d = '';
    let previous = null;
    for (const [t, v] of line.points) {
      // A gap wider than three steps is drawn as a gap.
      const jump = previous === null || t - previous > grid.step * 3;
      d += `${jump ? 'M' : 'L'}${x(t).toFixed(1)} ${y(v).toFixed(1)}`;
      previous = t;
    }
    parts.push(`<path class="line" data-points="${line.points.length}" stroke="${line.colour}" d="${d}"><title>${esc(line.name)}</title></path>`);
  }
  if (lines.every((line) => line.points.length === 0)) {
    parts.push(`<text class="empty" x="${(W + L) / 2}" y="${H / 2}" text-anchor="middle">no data in this range yet</text>`);
  }
  parts.push(`<line class="cursor" x1="0" x2="0" y1="${T}" y2="${H - B}" visibility="hidden"/></svg>`);
  return parts.join('');
}

async function drawChart(chart, grid, marks) {
  const results = await Promise.all(chart.queries.map((q) => api(
    `/api/query_range?query=${encodeURIComponent(q.expr)}&start=${grid.start}&end=${grid.end}&step=${grid.step}`,
  ).then((answer) => ({ q, answer }), (error) => ({ q, error }))));
  const lines = [];
  const errors = [];
  for (const { q, answer, error } of results) {
    if (error) { errors.push(error.message); continue; }
    for (const series of answer.series) {
      const name = legendOf(q.legend, series.labels) || q.legend;
      const colour = CLASS_COLOURS[name] || LEGEND_COLOURS[name] || PALETTE[lines.length % PALETTE.length];
      lines.push({ name, colour, points: series.points });
    }
  }
  lastGrids.set(`chart-${chart.id}`, { grid, lines });
  const format = UNITS[chart.unit] || String;
  const legend = lines.map((line) => {
    const last = line.points.length ? format(line.points[line.points.length - 1][1]) : '–';
    return `<li><span class="swatch" style="background:${line.colour}"></span>${esc(line.name)} <b>${esc(last)}</b></li>`;
  }).join('');
  return `<article class="card chart-card" id="chart-${esc(chart.id)}" data-unit="${esc(chart.unit)}">
    <h3>${esc(chart.title)}</h3>
    ${errors.length ? `<p class="error">${esc(errors.join('; '))}</p>` : ''}
    <div class="plot">${chartSvg(lines, grid, chart.unit, marks)}<div class="hover" hidden></div></div>
    <ul class="legend">${legend}</ul>
    <details><summary>PromQL</summary>${chart.queries.map((q) => `<code>${esc(q.expr)}</code>`).join('')}</details>
  </article>`;
}

// Hover: the values of every line at the nearest point under the pointer.
main.addEventListener('pointermove', (event) => {
  const plot = event.target.closest && event.target.closest('.plot');
  if (!plot || !plot.dataset.grid) return;
  const svg = plot.querySelector('svg');
  const box = svg.getBoundingClientRect();
  const grid = JSON.parse(plot.dataset.grid);
  const lines = JSON.parse(plot.dataset.lines || '[]');
  const width = svg.viewBox.baseVal.width;
  const sx = (event.clientX - box.left) * (width / box.width);
  const t = grid.start + ((sx - 64) / (width - 78)) * (grid.end - grid.start);
  if (t < grid.start || t > grid.end) return;
  const format = UNITS[plot.closest('.chart-card').dataset.unit] || String;
  const rows = lines.map((line) => {
    let best = null;
    for (const p of line.points) if (best === null || Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
    return best ? `<div><span class="swatch" style="background:${line.colour}"></span>${esc(line.name)}: <b>${esc(format(best[1]))}</b></div>` : '';
  }).join('');
  const hover = plot.querySelector('.hover');
  hover.innerHTML = `<div class="when">${clock(t, grid.end - grid.start > 86400000)}</div>${rows}`;
  hover.hidden = false;
  const cursor = svg.querySelector('.cursor');
  cursor.setAttribute('x1', sx.toFixed(1));
  cursor.setAttribute('x2', sx.toFixed(1));
  cursor.setAttribute('visibility', 'visible');
});
main.addEventListener('pointerleave', () => {
  for (const h of main.querySelectorAll('.hover')) h.hidden = true;
  for (const c of main.querySelectorAll('.cursor')) c.setAttribute('visibility', 'hidden');
}, true);

// ---- pages ------------------------------------------------------------------------------

function uptimeCell(u) {
  if (!u || u.ratio == null) return `<span class="muted" title="no readiness samples in this window">–</span>`;
  const cls = u.ratio >= 0.999 ? 'ok' : u.ratio >= 0.99 ? 'warn' : 'bad';
  const since = u.since_ms ? `<small title="the store holds less than ${esc(u.window)} of history">since ${esc(clock(u.since_ms, Date.now() - u.since_ms > 86400000))}</small>` : '';
  return `<span class="uptime ${cls}">${percent(u.ratio)}</span>${since}`;
}

async function overviewPage() {
  const o = await api('/api/overview');
  document.getElementById('stack').textContent = o.stack;
  if (!o.services.length) return '<h1>Services</h1><p class="muted">This stack has no services yet.</p>';
  const cards = o.services.map((s) => {
    const total = s.instances.length;
    const health = total === 0 ? pill('no instances', 'bad')
      : s.ready === total ? pill(`${s.ready}/${total} ready`, 'ok')
        : pill(`${s.ready}/${total} ready`, s.ready ? 'warn' : 'bad');
    const routes = s.routes.map((r) => `<tr><td><code>${esc(r.host)}${esc(r.path)}</code></td>
      <td class="num">${r.rate == null ? '–' : UNITS.rps(r.rate)}</td>
      <td class="num ${r.error_ratio > 0.01 ? 'bad-text' : ''}">${r.error_ratio == null ? '–' : UNITS.ratio(r.error_ratio)}</td></tr>`).join('');
    const instances = s.instances.map((i) => `<tr><td><code>${esc(i.id)}</code></td><td>${pill(i.state)}</td>
      <td class="num">${i.uptime_seconds == null ? '–' : duration(i.uptime_seconds * 1000)}</td>
      <td class="num">${i.rss_bytes == null ? '–' : bytes(i.rss_bytes)}</td><td class="num">${i.restarts}</td></tr>`).join('');
    return `<article class="card service" data-service="${esc(s.name)}">
      <header><h2><a href="#/service/${encodeURIComponent(s.name)}">${esc(s.name)}</a></h2>${health}</header>
      <dl class="facts">
        <div><dt>Release</dt><dd><code title="${esc(s.releases.join(', '))}">${esc(s.releases.map(shortRelease).join(' → ') || '–')}</code></dd></div>
        <div><dt>Restarts</dt><dd>${s.restarts}</dd></div>
        ${s.uptime.map((u) => `<div><dt>Uptime ${esc(u.window)}</dt><dd>${uptimeCell(u)}</dd></div>`).join('')}
      </dl>
      ${routes ? `<table class="compact"><thead><tr><th>Route</th><th class="num">Rate</th><th class="num">Errors</th></tr></thead><tbody>${routes}</tbody></table>` : '<p class="muted small">No route: no request metrics.</p>'}
      <details class="instances"><summary>${total} instance${total === 1 ? '' : 's'}</summary>
        <table class="compact"><thead><tr><th>Instance</th><th>State</th><th class="num">Up</th><th class="num">RSS</th><th class="num">Restarts</th></tr></thead><tbody>${instances}</tbody></table>
      </details>
    </article>`;
  }).join('');
  const warning = o.warning ? `<p class="error">${esc(o.warning)}</p>` : '';
  return `<h1>Services</h1>${warning}<section class="grid services">${cards}</section>`;
}

const RANGES = [['15m', 900], ['1h', 3600], ['6h', 21600], ['24h', 86400], ['7d', 604800]];

async function servicePage(name, params) {
  const range = Number(params.get('range')) || 3600;
  const page = await api(`/api/services/${encodeURIComponent(name)}?range=${range}`);
  document.getElementById('stack').textContent = page.stack;
  const { grid } = page;
  const marks = await api(`/api/annotations?start=${grid.start}&end=${grid.end}&service=${encodeURIComponent(name)}`).catch(() => []);
  const charts = await Promise.all(page.charts.map((chart) => drawChart(chart, grid, marks)));
  const ranges = RANGES.map(([label, seconds]) => `<a class="${seconds === range ? 'active' : ''}" href="#/service/${encodeURIComponent(name)}?range=${seconds}">${label}</a>`).join('');
  const instances = page.service.instances.map((i) => `<tr><td><code>${esc(i.id)}</code></td><td>${pill(i.state)}</td>
    <td class="wrap">${esc(i.health)}</td><td><code>${esc(shortRelease(i.release))}</code></td>
    <td class="num">${i.uptime_seconds == null ? '–' : duration(i.uptime_seconds * 1000)}</td><td class="num">${i.rss_bytes == null ? '–' : bytes(i.rss_bytes)}</td><td class="num">${i.restarts}</td></tr>`).join('');
  const deploys = marks.filter((m) => m.kind === 'deploy').reverse().map((m) => `<tr><td>${clock(m.time_ms, true)}</td><td>${esc(m.title)}</td><td>${pill(m.result)}</td><td class="num">${m.end_ms ? duration(m.end_ms - m.time_ms) : '–'}</td></tr>`).join('');
  return `<p class="crumbs"><a href="#/">Services</a> / ${esc(name)}</p>
    <div class="titlebar"><h1>${esc(name)}</h1><nav class="ranges">${ranges}</nav></div>
    <section class="grid charts">${charts.join('')}</section>
    <section class="card"><h3>Instances</h3><div class="scroll"><table><thead><tr><th>Instance</th><th>State</th><th>Health</th><th>Release</th><th class="num">Up</th><th class="num">RSS</th><th class="num">Restarts</th></tr></thead><tbody>${instances || '<tr><td colspan="7" class="muted">none</td></tr>'}</tbody></table></div></section>
    <section class="card"><h3>Deploys in this range</h3><div class="scroll"><table><thead><tr><th>When</th><th>What</th><th>Result</th><th class="num">Took</th></tr></thead><tbody>${deploys || '<tr><td colspan="4" class="muted">none</td></tr>'}</tbody></table></div></section>`;
}

async function runsPage() {
  const runs = await api('/api/runs');
  if (!runs.length) return '<h1>Pipeline runs</h1><p class="muted">No runs recorded yet: <code>kiln ci run</code> records the first one.</p>';
  const rows = runs.map((r) => `<tr data-run="${r.id}"><td><a href="#/runs/${r.id}">#${r.id}</a></td><td>${esc(r.workflow)}</td>
    <td><code>${esc(r.commit.slice(0, 10))}</code></td><td>${esc(r.event)}</td><td>${pill(r.status)}</td>
    <td class="num">${duration(r.duration_ms)}</td><td>${when(r.started_at)}</td></tr>`).join('');
  return `<h1>Pipeline runs</h1><section class="card"><div class="scroll"><table class="runs"><thead><tr><th>Run</th><th>Workflow</th><th>Commit</th><th>Event</th><th>Status</th><th class="num">Duration</th><th>Started</th></tr></thead><tbody>${rows}</tbody></table></div></section>`;
}

const openLogs = new Set();

async function runPage(id) {
  const detail = await api(`/api/runs/${encodeURIComponent(id)}`);
  const r = detail.run;
  const jobs = await Promise.all(detail.jobs.map(async (job) => {
    const steps = job.steps.map((s) => `<tr><td>${pill(s.conclusion)}</td><td>${esc(s.name)}</td><td class="num">${duration(s.duration_ms)}</td><td class="num">${s.exit_code == null ? '' : `exit ${s.exit_code}`}</td></tr>`).join('');
    const key = `${r.id}/${job.name}`;
    let log = '';
    if (openLogs.has(key)) {
      const text = await api(`/api/runs/${r.id}/logs/${encodeURIComponent(job.name)}`).catch((e) => `(${e.message})`);
      log = `<pre class="log">${esc(text)}</pre>`;
    }
    return `<article class="card job"><header><h3>${esc(job.name)}</h3>${pill(job.status)}<span class="muted">${duration(job.duration_ms)}</span></header>
      ${(job.annotations || []).map((a) => `<p class="annotation ${esc(a.level)}">${esc(a.level)}: ${esc(a.text)}</p>`).join('')}
      <div class="scroll"><table class="compact">${steps}</table></div>
      <button type="button" data-log="${esc(key)}">${openLogs.has(key) ? 'Hide log' : 'Show log'}</button>${log}</article>`;
  }));
  return `<p class="crumbs"><a href="#/runs">Pipeline runs</a> / #${r.id}</p>
    <div class="titlebar"><h1>${esc(r.workflow)} #${r.id}</h1>${pill(r.status)}</div>
    <dl class="facts card"><div><dt>Commit</dt><dd><code>${esc(r.commit)}</code></dd></div><div><dt>Event</dt><dd>${esc(r.event)}</dd></div>
      <div><dt>Started</dt><dd>${when(r.started_at)}</dd></div><div><dt>Duration</dt><dd>${duration(r.duration_ms)}</dd></div></dl>
    ${detail.error ? `<p class="error">${esc(detail.error)}</p>` : ''}
    ${jobs.join('') || '<p class="muted">No job finished in this run.</p>'}`;
}

main.addEventListener('click', (event) => {
  const button = event.target.closest && event.target.closest('button[data-log]');
  if (!button) return;
  const key = button.dataset.log;
  if (openLogs.has(key)) openLogs.delete(key); else openLogs.add(key);
  render();
});

// Kinds (their first word) seen so far, for the filter.
const seenKinds = new Set(['deploy', 'drift', 'instance']);

async function eventsPage(params) {
  const kind = params.get('kind') || '';
  const answer = await api(`/api/events?limit=300${kind ? `&kind=${encodeURIComponent(kind)}` : ''}`);
  for (const e of answer.events) seenKinds.add(e.kind.split('.')[0]);
  if (kind) seenKinds.add(kind);
  const kinds = ['', ...[...seenKinds].sort()];
  const options = kinds.map((k) => `<a class="${k === kind ? 'active' : ''}" href="#/events${k ? `?kind=${encodeURIComponent(k)}` : ''}">${k || 'all'}</a>`).join('');
  const rows = answer.events.map((e) => `<tr data-kind="${esc(e.kind)}"><td class="nowrap">${when(e.time)}</td><td>${pill(e.kind, kindClass(e.kind))}</td>
    <td><code>${esc(e.address || '')}</code></td><td class="wrap">${esc(e.message)}</td></tr>`).join('');
  return `<div class="titlebar"><h1>Events</h1><nav class="ranges">${options}</nav></div>
    <section class="card"><div class="scroll"><table class="events"><thead><tr><th>Time</th><th>Kind</th><th>Address</th><th>Message</th></tr></thead>
    <tbody>${rows || '<tr><td colspan="4" class="muted">No events of this kind.</td></tr>'}</tbody></table></div></section>`;
}

// ---- alerts and incidents ---------------------------------------------------------------

// A time in ms as `when` shows RFC 3339 text.
const whenMs = (ms) => (ms == null ? '–' : when(new Date(ms).toISOString()));

function alertClass(state) {
  if (state === 'firing') return 'bad';
  if (state === 'pending') return 'warn';
  return 'idle';
}

function incidentClass(state) {
  if (state === 'open') return 'bad';
  if (state === 'acknowledged' || state === 'mitigated') return 'warn';
  return 'ok';
}

function runbookRuns(runs) {
  if (!runs.length) return '<p class="muted small">No run recorded yet.</p>';
  const rows = runs.map((r) => `<tr data-run-status="${esc(r.status)}"><td>${pill(r.status)}${r.dry_run ? ' <span class="pill idle">dry run</span>' : ''}</td>
    <td>${esc(r.trigger)}</td><td class="wrap">${esc(r.triggered_by)}</td><td><code>${esc(r.target)}</code></td>
    <td class="nowrap">${whenMs(r.started_ms)}</td><td class="num">${r.finished_ms == null ? '–' : duration(r.finished_ms - r.started_ms)}</td>
    <td class="wrap">${esc(r.detail)}</td></tr>`).join('');
  return `<div class="scroll"><table class="compact"><thead><tr><th>Status</th><th>Trigger</th><th>By</th><th>Target</th><th>Started</th><th class="num">Took</th><th>Detail</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

function runbookPanel(doc) {
  if (!doc) return '<aside class="runbook"><p class="muted">This alert names no runbook.</p></aside>';
  const body = doc.error ? `<p class="error">Cannot read this runbook: ${esc(doc.error)}</p>`
    : !doc.declared
    ? `<p class="error">The stack declares no runbook named <code>${esc(doc.name)}</code> any more.</p>`
    // doc_html is rendered by the server from Markdown with every raw HTML tag escaped and
    // unsafe links dropped (kiln-api's markdown.rs): it is the only markup put in as is.
    : doc.doc_html ? `<div class="doc">${doc.doc_html}</div>` : '<p class="muted">This runbook has no description.</p>';
  return `<aside class="runbook" data-runbook="${esc(doc.name)}"><h3>Runbook <code>${esc(doc.name)}</code></h3>${body}
    ${doc.declared && !doc.error ? `<h4>Latest runs</h4>${runbookRuns(doc.runs)}` : ''}</aside>`;
}

async function alertsPage() {
  const page = await api('/api/alerts');
  const warning = page.warning ? `<p class="error">${esc(page.warning)}</p>` : '';
  if (!page.alerts.length) {
    return `<h1>Alerts</h1>${warning}<p class="muted">No alert is firing or pending.</p>`;
  }
  const cards = page.alerts.map((a) => {
    const labels = Object.entries(a.labels).filter(([k]) => k !== 'alertname')
      .map(([k, v]) => `<code>${esc(k)}=${esc(v)}</code>`).join(' ');
    const notes = Object.entries(a.annotations)
      .map(([k, v]) => `<div><dt>${esc(k)}</dt><dd class="wrap">${esc(v)}</dd></div>`).join('');
    return `<article class="card alert" data-alert="${esc(a.name)}" data-state="${esc(a.state)}">
      <div class="alert-main">
        <header><h2>${esc(a.name)}</h2>${pill(a.state, alertClass(a.state))}${a.muted ? pill(a.muted, 'idle') : ''}</header>
        <dl class="facts"><div><dt>Since</dt><dd>${whenMs(a.since_ms)}</dd></div>
          <div><dt>Active from</dt><dd>${whenMs(a.active_at_ms)}</dd></div>
          <div><dt>Value</dt><dd>${a.value == null ? '–' : esc(number(a.value, 3))}</dd></div></dl>
        <p class="labels">${labels}</p>
        ${notes ? `<dl class="notes">${notes}</dl>` : ''}
      </div>
      ${runbookPanel(a.runbook_doc)}
    </article>`;
  }).join('');
  return `<h1>Alerts</h1>${warning}<section class="alerts">${cards}</section>`;
}

function incidentRows(list) {
  return list.map((i) => `<tr data-incident="${i.id}"><td><a href="#/incidents/${i.id}">#${i.id}</a></td>
    <td class="wrap">${esc(i.title)}</td><td>${esc(i.service)}</td><td>${pill(i.state, incidentClass(i.state))}</td>
    <td>${esc(i.severity)}</td><td class="nowrap">${whenMs(i.detected_ms)}</td>
    <td class="num">${duration(i.time_to_acknowledge_ms)}</td><td class="num">${duration(i.time_to_mitigate_ms)}</td>
    <td class="num">${duration(i.time_to_restore_ms)}</td></tr>`).join('');
}

function incidentTable(list, empty) {
  if (!list.length) return `<p class="muted">${empty}</p>`;
  return `<div class="scroll"><table class="incidents"><thead><tr><th>Incident</th><th>Title</th><th>Service</th><th>State</th><th>Severity</th><th>Detected</th>
    <th class="num" title="time to acknowledge">TTA</th><th class="num" title="time to mitigate">TTM</th><th class="num" title="time to restore">TTR</th></tr></thead>
    <tbody>${incidentRows(list)}</tbody></table></div>`;
}

async function incidentsPage() {
  const page = await api('/api/incidents');
  return `<h1>Incidents</h1>
    <section class="card"><h3>Open</h3>${incidentTable(page.open, 'No open incident.')}</section>
    <section class="card"><h3>Recently resolved</h3>${incidentTable(page.recent, 'No resolved incident yet.')}</section>`;
}

async function incidentPage(id) {
  const i = await api(`/api/incidents/${encodeURIComponent(id)}`);
  const detected = i.milestones.length ? i.milestones[0].at_ms : null;
  const milestones = i.milestones.map((m) => `<tr data-milestone="${esc(m.name)}"><td>${esc(m.name)}</td><td class="nowrap">${whenMs(m.at_ms)}</td>
    <td>${esc(m.actor || '–')}</td><td class="num">${m.at_ms == null || detected == null ? '–' : duration(m.at_ms - detected)}</td></tr>`).join('');
  const alerts = i.alerts.map((a) => `<tr><td>${esc(a.name)}</td><td class="nowrap">${whenMs(a.fired_ms)}</td>
    <td class="nowrap">${a.resolved_ms == null ? pill('firing', 'bad') : whenMs(a.resolved_ms)}</td><td class="num">${a.firings}</td></tr>`).join('');
  const timeline = i.timeline.map((e) => `<tr data-kind="${esc(e.kind)}"><td class="nowrap">${whenMs(e.at_ms)}</td><td>${esc(e.actor)}</td>
    <td>${pill(e.kind, kindClass(e.kind))}</td><td class="wrap">${esc(e.text)}</td></tr>`).join('');
  return `<p class="crumbs"><a href="#/incidents">Incidents</a> / #${i.id}</p>
    <div class="titlebar"><h1>#${i.id} ${esc(i.title)}</h1>${pill(i.state, incidentClass(i.state))}</div>
    <dl class="facts card"><div><dt>Service</dt><dd>${esc(i.service)}</dd></div><div><dt>Severity</dt><dd>${esc(i.severity)}</dd></div>
      <div><dt>Detected</dt><dd>${whenMs(i.detected_ms)}</dd></div>
      <div><dt>Time to acknowledge</dt><dd>${duration(i.time_to_acknowledge_ms)}</dd></div>
      <div><dt>Time to mitigate</dt><dd>${duration(i.time_to_mitigate_ms)}</dd></div>
      <div><dt>Time to restore</dt><dd>${duration(i.time_to_restore_ms)}</dd></div></dl>
    <section class="card"><h3>Milestones</h3><div class="scroll"><table class="compact"><thead><tr><th>Milestone</th><th>When</th><th>Who</th><th class="num">After detection</th></tr></thead><tbody>${milestones}</tbody></table></div></section>
    <section class="card"><h3>Alerts</h3><div class="scroll"><table class="compact"><thead><tr><th>Alert</th><th>Fired</th><th>Resolved</th><th class="num">Firings</th></tr></thead><tbody>${alerts || '<tr><td colspan="4" class="muted">none</td></tr>'}</tbody></table></div></section>
    <section class="card"><h3>Timeline</h3><div class="scroll"><table class="events timeline"><thead><tr><th>Time</th><th>Actor</th><th>Kind</th><th>What</th></tr></thead>
    <tbody>${timeline}</tbody></table></div></section>`;
}

function kindClass(kind) {
  if (/exited|crash|unhealthy|fail|rolled|rollback|orphan|drift|fired|reopened/.test(kind)) return 'bad';
  if (/ready|finished|succeeded|adopted|resolved|mitigated/.test(kind)) return 'ok';
  if (/restart|stopp|scaled|acknowledged/.test(kind)) return 'warn';
  return 'info';
}

// ---- delivery (DORA) --------------------------------------------------------------------

const DORA_WINDOWS = ['7d', '30d', '90d'];
// The API gives lead and recovery times in seconds; they read best as durations.
const DORA_UNITS = { per_day: 'per_day', seconds: 'duration', ratio: 'ratio' };
const LEVEL_CLASSES = { elite: 'ok', high: 'info', medium: 'warn', low: 'bad' };

function deliveryHref(since, service) {
  const query = new URLSearchParams({ since });
  if (service) query.set('service', service);
  return `#/delivery?${query}`;
}

async function deliveryPage(params) {
  const since = params.get('since') || '30d';
  const service = params.get('service') || '';
  const query = new URLSearchParams({ since });
  if (service) query.set('service', service);
  const [page, overview] = await Promise.all([
    api(`/api/dora?${query}`),
    api('/api/overview').catch(() => ({ services: [] })),
  ]);
  if (overview.stack) document.getElementById('stack').textContent = overview.stack;
  const windows = DORA_WINDOWS.map((w) => `<a class="${w === since ? 'active' : ''}" href="${deliveryHref(w, service)}">${w}</a>`).join('');
  const names = ['', ...overview.services.map((s) => s.name)];
  if (service && !names.includes(service)) names.push(service);
  const services = names.map((n) => `<a class="${n === service ? 'active' : ''}" href="${deliveryHref(since, n)}">${esc(n || 'all services')}</a>`).join('');
  const who = service ? esc(service) : 'every service';
  const summary = page.changes
    ? `<p class="muted">${page.changes} change${page.changes === 1 ? '' : 's'} in the last ${esc(page.since)} for ${who}: ${page.deployments} deployed, ${page.failed_changes} failed. Levels: DORA 2024.</p>`
    : `<p class="empty-history">No deploys recorded in the last ${esc(page.since)} for ${who}: nothing to measure yet. <code>kiln deploy</code> records the first one.</p>`;
  const tiles = page.metrics.map((m) => {
    const format = UNITS[DORA_UNITS[m.unit]] || String;
    const level = m.level ? pill(m.level, LEVEL_CLASSES[m.level]) : '<span class="muted">no level</span>';
    return `<article class="card tile" data-metric="${esc(m.key)}" data-level="${esc(m.level || '')}">
      <h3>${esc(m.title)}</h3>
      <div class="figure">${m.value == null ? '–' : esc(format(m.value))}</div>
      ${level}
      <p class="hint" title="thresholds">${esc(m.thresholds)}</p>
    </article>`;
  }).join('');
  const step = page.bucket === 'day' ? 86400000 : 7 * 86400000;
  const first = page.trend.length ? page.trend[0].start_ms : page.start_ms;
  const last = page.trend.length ? page.trend[page.trend.length - 1].start_ms : page.end_ms;
  const grid = { start: first, end: Math.max(last, first + step), step };
  const charts = page.changes ? page.metrics.map((m, i) => {
    const points = page.trend.filter((b) => b.values[i] != null).map((b) => [b.start_ms, b.values[i]]);
    const lines = [{ name: m.title, colour: PALETTE[i], points }];
    return `<article class="card chart-card" id="dora-${esc(m.key)}" data-unit="${esc(DORA_UNITS[m.unit])}">
      <h3>${esc(m.title)} per ${esc(page.bucket)}</h3>
      <div class="plot">${chartSvg(lines, grid, DORA_UNITS[m.unit], [])}</div>
    </article>`;
  }).join('') : '';
  return `<div class="titlebar"><h1>Delivery</h1><nav class="ranges">${windows}</nav></div>
    <nav class="ranges services-filter">${services}</nav>
    ${summary}
    <section class="grid tiles">${tiles}</section>
    ${charts ? `<section class="grid charts dora-trend">${charts}</section>` : ''}`;
}

// ---- routing ----------------------------------------------------------------------------

function parseHash() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, query] = hash.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query || '') };
}

function view() {
  const { parts, params } = parseHash();
  if (parts[0] === 'service' && parts[1]) return ['overview', () => servicePage(parts[1], params)];
  if (parts[0] === 'runs' && parts[1]) return ['runs', () => runPage(parts[1])];
  if (parts[0] === 'runs') return ['runs', runsPage];
  if (parts[0] === 'events') return ['events', () => eventsPage(params)];
  if (parts[0] === 'alerts') return ['alerts', alertsPage];
  if (parts[0] === 'incidents' && parts[1]) return ['incidents', () => incidentPage(parts[1])];
  if (parts[0] === 'incidents') return ['incidents', incidentsPage];
  if (parts[0] === 'delivery') return ['delivery', () => deliveryPage(params)];
  return ['overview', overviewPage];
}

let generation = 0;
let timer = null;

async function render() {
  const current = ++generation;
  clearTimeout(timer);
  const [section, page] = view();
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === section);
  let html;
  try {
    html = await page();
  } catch (error) {
    html = `<p class="error">${error.status === 404 ? 'Not found: ' : 'Cannot load this page: '}${esc(error.message)}</p>`;
  }
  if (current !== generation) return;
  const open = [...main.querySelectorAll('details[open]')].map((d) => d.closest('[id],[data-service]')).filter(Boolean)
    .map((el) => el.id || el.dataset.service);
  main.innerHTML = html;
  for (const el of main.querySelectorAll('[id],[data-service]')) {
    if (open.includes(el.id || el.dataset.service)) { const d = el.querySelector('details'); if (d) d.open = true; }
  }
  attachPlots();
  document.getElementById('updated').textContent = `updated ${clock(Date.now())}`;
  timer = setTimeout(render, REFRESH_MS);
}

// Each plot keeps its lines for the hover read-out.
function attachPlots() {
  for (const plot of main.querySelectorAll('.plot')) {
    const drawn = lastGrids.get(plot.closest('.chart-card').id);
    if (!drawn) continue;
    plot.dataset.grid = JSON.stringify(drawn.grid);
    plot.dataset.lines = JSON.stringify(drawn.lines);
  }
}

window.addEventListener('hashchange', render);
render();
